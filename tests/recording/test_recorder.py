"""Recordings from real cameras: stream copy from a keyframe, segments, crashes, a full disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from server.cameras import CameraOptions
from server.recording import (
    InsufficientSpace,
    Recorder,
    RecordingError,
    RecordingOptions,
    recover_leftovers,
)
from tests.support.observer import CameraFactory
from tests.support.rtsp import RtspCameraFactory, VideoFactory

_REPO = Path(__file__).resolve().parents[2]


def _decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def _time_s(frame: av.VideoFrame) -> float:
    assert frame.time is not None
    return frame.time


def _frame_times(path: Path) -> list[float]:
    return [_time_s(frame) for frame in _decode(path)]


@pytest.mark.rtsp
def test_recording_decodes_end_to_end_from_a_keyframe(
    rtsp_camera: RtspCameraFactory,
    make_video: VideoFactory,
    open_camera: CameraFactory,
    tmp_path: Path,
) -> None:
    server = rtsp_camera({"/cam1": make_video(seconds=2.0)}, loop=True)
    camera, observer = open_camera(server.url("/cam1"), decode=True)
    observer.wait_frames(35, timeout_s=5.0)  # mid-GOP (GOP = 25)
    recorder = Recorder(tmp_path / "out.mp4", expected_duration_s=3.0)

    recorder.attach(camera)
    first_after_attach = len(observer.frames)
    observer.wait_frames(first_after_attach + 40, timeout_s=5.0)
    result = recorder.finish()

    assert result.path == tmp_path / "out.mp4"
    assert not list(tmp_path.glob("*.part"))
    assert result.segments == 1
    assert result.bytes == result.path.stat().st_size
    frames = _decode(result.path)
    assert len(frames) == result.frames_written
    assert frames[0].key_frame
    assert frames[0].pts == 0
    assert result.duration_s == pytest.approx(len(frames) / 25, abs=0.05)
    # Same timeline as the camera: recorded time + start_time_s = CameraFrame.time_s, and every
    # frame handed out since the recorder attached is in the recording.
    start_s = result.start_time_s
    assert start_s <= observer.frames[first_after_attach].time_s
    recorded = {round(start_s + t, 3) for t in _frame_times(result.path)}
    handed_out = [
        f.time_s
        for f in observer.frames[first_after_attach:]
        if f.time_s - start_s <= result.duration_s - 0.04
    ]
    assert len(handed_out) >= 35
    assert {round(t, 3) for t in handed_out} <= recorded
    assert len(frames) - len(handed_out) < 25 + 16  # at most a GOP before + decoder lag after
    # The pictures are the camera's: compare the last recorded frame with the handed-out one.
    by_time = {round(f.time_s, 3): f.image_rgb for f in observer.frames}
    last = frames[-1]
    reference = by_time.get(round(start_s + _time_s(last), 3))
    if reference is not None:
        assert np.abs(last.to_ndarray(format="rgb24").astype(int) - reference).mean() < 3


@pytest.mark.rtsp
def test_a_reconnect_mid_recording_is_joined_into_one_file(
    rtsp_camera: RtspCameraFactory,
    make_video: VideoFactory,
    open_camera: CameraFactory,
    tmp_path: Path,
) -> None:
    server = rtsp_camera({"/cam1": make_video(seconds=2.0)}, loop=True)
    camera, observer = open_camera(
        server.url("/cam1"),
        CameraOptions(reconnect_initial_s=0.2, reconnect_max_s=0.4),
        decode=True,
    )
    observer.wait_frames(5, timeout_s=5.0)
    (tmp_path / "videos").mkdir()
    recorder = Recorder(tmp_path / "videos" / "joined.mp4")
    recorder.attach(camera)
    observer.wait_frames(30, timeout_s=5.0)

    server.kill()
    time.sleep(1.0)
    server.restart()
    observer.wait_for(lambda: camera.counters.reconnects == 1, 10.0, "reconnect")
    observer.wait_frames(len(observer.frames) + 30, timeout_s=5.0)
    result = recorder.finish()

    assert result.segments == 2
    assert [path.name for path in (tmp_path / "videos").iterdir()] == ["joined.mp4"]
    times = _frame_times(result.path)
    assert len(times) == result.frames_written >= 50
    steps = np.diff(times)
    assert steps.min() > 0
    assert steps.max() >= 1.0  # the outage is a gap in the timeline, not spliced out


def test_repeated_and_backwards_timestamps_do_not_crash_the_muxer(
    make_video: VideoFactory, tmp_path: Path
) -> None:
    source = make_video(seconds=1.0)
    recorder = Recorder(tmp_path / "dts.mp4")
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        recorder.open_segment(stream)
        for index, packet in enumerate(container.demux(stream)):
            if packet.size == 0:
                continue
            assert packet.dts is not None
            if index in (5, 6):  # a repeated DTS, as a looping source produces
                packet.dts = packet.pts = 4 * 512
            if index == 10:  # a step backwards
                packet.dts = packet.pts = 2 * 512
            recorder.write_packet(packet)
        recorder.close_segment()
    result = recorder.finish()

    times = _frame_times(result.path)
    assert len(times) == result.frames_written == 25
    assert min(np.diff(times)) > 0


def _write_huffyuv_clip(path: Path, frame_count: int) -> None:
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("huffyuv", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv422p"
        for index in range(frame_count):
            image = np.full((120, 160, 3), index * 9 % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame.reformat(format="yuv422p")))
        container.mux(stream.encode(None))


def test_a_codec_mp4_cannot_carry_is_transcoded_to_h264(
    open_camera: CameraFactory, tmp_path: Path
) -> None:
    source = tmp_path / "huffyuv.avi"
    _write_huffyuv_clip(source, 25)
    camera, observer = open_camera(str(source))
    camera.wait_ready(5.0)
    recorder = Recorder(tmp_path / "transcoded.mp4")
    recorder.attach(camera)
    observer.wait_for(lambda: camera.status.state.value == "closed", 5.0, "end of file")

    result = recorder.finish()

    with av.open(str(result.path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    assert len(_decode(result.path)) == result.frames_written > 10


def _run_worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.record_worker", *args],
        cwd=_REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_a_killed_writer_leaves_a_file_that_decodes_and_is_recovered(
    make_video: VideoFactory, tmp_path: Path
) -> None:
    output = tmp_path / "videos" / "crash.mp4"
    output.parent.mkdir()
    worker = _run_worker(str(make_video(seconds=2.0)), str(output))
    assert worker.stdout is not None
    written = 0
    try:
        for line in worker.stdout:
            written = json.loads(line).get("frames_written", 0)
            if written >= 60:
                break
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        worker.stdout.close()

    assert written >= 60
    part = output.with_name("crash.mp4.part")
    decoded = len(_decode(part))
    assert decoded >= written - 25  # at most one second (one fragment) lost

    recovered = recover_leftovers(tmp_path / "videos")

    assert [r.path for r in recovered] == [output]
    assert recovered[0].frames == decoded
    assert not part.exists()
    assert len(_decode(output)) == decoded


def test_a_full_disk_fails_the_recording_and_nothing_else(
    make_video: VideoFactory, tmp_path: Path
) -> None:
    output = tmp_path / "full.mp4"
    clip = make_video(seconds=4.0)  # ~200 kB: the limit is hit before the file loops
    worker = _run_worker(
        str(clip), str(output), "--max-file-bytes", "60000", "--unpaced", "--seconds", "10"
    )
    stdout, _ = worker.communicate(timeout=60)

    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    assert summary["failure"] is not None
    assert "disk full" in summary["failure"]
    assert "File too large" in summary["failure"]
    assert summary["finish_error"] == summary["failure"]
    assert summary["frames_after_failure"] >= 50  # the camera kept handing out frames
    assert worker.returncode == 0


def test_space_is_checked_before_a_start(
    make_video: VideoFactory, open_camera: CameraFactory, tmp_path: Path
) -> None:
    camera, _ = open_camera(str(make_video(seconds=2.0)))
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    options = RecordingOptions(assumed_bitrate_bps=8.0)  # one byte per second
    recorder = Recorder(tmp_path / "big.mp4", options, expected_duration_s=free * 2.0)

    with pytest.raises(InsufficientSpace, match="MB free"):
        recorder.attach(camera)
    assert isinstance(InsufficientSpace("x"), RecordingError)


def test_abort_removes_the_parts_and_existing_files_are_not_overwritten(
    make_video: VideoFactory, open_camera: CameraFactory, tmp_path: Path
) -> None:
    camera, observer = open_camera(str(make_video(seconds=2.0)), decode=True)
    recorder = Recorder(tmp_path / "aborted.mp4")
    recorder.attach(camera)
    observer.wait_frames(30, timeout_s=5.0)

    recorder.abort("cancelled before the start")

    assert list(tmp_path.glob("aborted*")) == []
    (tmp_path / "taken.mp4").write_bytes(b"")
    with pytest.raises(RecordingError, match="already exists"):
        Recorder(tmp_path / "taken.mp4").attach(camera)
