"""Cameras reading local files: pacing, end of file, looping, decoder priming, packets, drops."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from server.cameras import CameraError, CameraOptions, CameraState, parse_source, redact
from tests.support.observer import CameraFactory, Observer
from tests.support.rtsp import VideoFactory


def _decoded_file_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_sources_are_classified_and_urls_redacted() -> None:
    assert parse_source("rtsp://10.0.0.5/stream").live
    assert parse_source("RTSPS://10.0.0.5/stream").live
    assert not parse_source("file:///videos/a.mp4").live
    assert parse_source("file:///videos/a.mp4").location == "/videos/a.mp4"
    assert not parse_source("/videos/a.mp4").live
    with pytest.raises(CameraError, match="unsupported source"):
        parse_source("http://10.0.0.5/a.mp4")
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/s") == "rtsp://admin:***@10.0.0.5:554/s"
    assert redact("rtsp://10.0.0.5/s") == "rtsp://10.0.0.5/s"


def test_a_file_is_paced_at_real_time_and_ends_closed(
    make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    path = make_video(seconds=1.0)
    started_s = time.monotonic()
    camera, observer = open_camera(f"file://{path}", decode=True)

    observer.wait_for(lambda: camera.status.state is CameraState.CLOSED, 10.0, "end of file")

    assert time.monotonic() - started_s >= 0.8  # 25 frames at 25 fps, not as fast as possible
    assert len(observer.frames) == 25
    assert camera.status.detail == "end of file"
    times = [frame.time_s for frame in observer.frames]
    assert times[0] == 0.0
    assert np.allclose(np.diff(times), 0.04)


def test_an_unpaced_looping_file_keeps_time_increasing(
    make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    path = make_video(seconds=1.0)
    options = CameraOptions(realtime_files=False, loop_files=True)
    camera, observer = open_camera(str(path), options, decode=True)

    observer.wait_frames(60, timeout_s=10.0)

    times = [frame.time_s for frame in observer.frames[:60]]
    assert min(b - a for a, b in itertools.pairwise(times)) > 0
    assert times[59] == pytest.approx(59 * 0.04, abs=1e-6)
    assert camera.counters.reconnects == 0


def test_a_late_frame_sink_gets_correct_frames_mid_gop(
    make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    """Decoding starts only when a sink is set; the decoder is primed from the GOP buffer, so
    the first frame handed out is the right picture, not a keyframe later or a corrupt one."""
    path = make_video(seconds=3.0)
    expected = _decoded_file_frames(path)
    camera, observer = open_camera(str(path))
    camera.wait_ready(5.0)
    time.sleep(0.5)  # mid-GOP (GOP = 1 s)
    assert camera.counters.frames_decoded == 0

    camera.set_frame_sink(observer.on_frame)
    observer.wait_frames(10, timeout_s=5.0)

    first = observer.frames[0]
    assert first.index == 0
    position = round(first.time_s * 25)
    assert position % 25 != 0, "started at a keyframe: the GOP replay was not exercised"
    for frame in observer.frames[:10]:
        reference = expected[round(frame.time_s * 25)].astype(np.int16)
        assert np.abs(frame.image_rgb.astype(np.int16) - reference).mean() < 3


def test_refused_frames_are_counted_as_dropped(
    make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    refusing = Observer(accept=False)
    camera, _ = open_camera(
        str(make_video(seconds=1.0)),
        CameraOptions(realtime_files=False),
        observer=refusing,
        decode=True,
    )

    refusing.wait_for(lambda: camera.status.state is CameraState.CLOSED, 10.0, "end of file")

    assert camera.counters.frames_decoded == 25
    assert camera.counters.frames_dropped == 25


def test_a_packet_sink_gets_packets_from_a_keyframe(
    make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    camera, _ = open_camera(str(make_video(seconds=3.0)))
    camera.wait_ready(5.0)
    time.sleep(0.5)
    sink = Observer()

    camera.attach(sink)
    sink.wait_for(lambda: len(sink.packets) >= 20, 5.0, "20 packets")
    camera.detach(sink)
    count = len(sink.packets)
    time.sleep(0.2)

    assert len(sink.packets) == count  # nothing after detach
    assert sink.segments_opened == 1
    assert sink.packets[0].is_keyframe
    dts = [packet.dts for packet in sink.packets if packet.dts is not None]
    assert len(dts) == len(sink.packets)
    assert dts == sorted(dts)
    assert len(set(dts)) == len(dts)


def test_a_missing_file_fails_at_once(open_camera: CameraFactory, tmp_path: Path) -> None:
    camera, _ = open_camera(str(tmp_path / "missing.mp4"))
    with pytest.raises(CameraError, match="no such file"):
        camera.wait_ready(5.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"stall_timeout_s": 0.0},
        {"stall_timeout_s": 3.0, "read_timeout_s": 2.0},
        {"reconnect_initial_s": 2.0, "reconnect_max_s": 1.0},
        {"decoder_thread_type": "MANY"},
    ],
)
def test_inconsistent_options_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|unknown"):
        CameraOptions(**changes)
