"""The RTSP test fixture itself: PyAV decodes what gst-rtsp-server serves, over TCP on loopback."""

from __future__ import annotations

import itertools
import time

import av
import pytest

from tests.support.rtsp import RtspCameraFactory, VideoFactory

pytestmark = pytest.mark.rtsp

_OPEN_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "500000", "probesize": "65536"}


def _read_frames(url: str, *, max_frames: int, max_s: float) -> tuple[int, list[float], bool]:
    """Decode up to max_frames or max_s seconds: (frames decoded, their times, EOF seen).

    FFmpeg hands out the first keyframe of an RTSP session without timestamps (measured with
    av 18.1), so the first frame's time may be missing; every later one must be there.
    """
    times: list[float] = []
    frame_count = 0
    deadline = time.monotonic() + max_s
    with av.open(url, options=_OPEN_OPTIONS, timeout=(5.0, 2.0)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                return frame_count, times, True
            for frame in packet.decode():
                assert frame.width == 320
                assert frame.height == 240
                frame_count += 1
                if frame.time is None:
                    assert frame_count == 1, "only the first frame may lack a timestamp"
                    continue
                times.append(frame.time)
            if frame_count >= max_frames or time.monotonic() > deadline:
                break
    return frame_count, times, False


def test_decodes_frames_over_tcp(rtsp_camera: RtspCameraFactory, make_video: VideoFactory) -> None:
    camera = rtsp_camera({"/cam1": make_video(seconds=3.0)})
    assert camera.url("/cam1") == f"rtsp://127.0.0.1:{camera.port}/cam1"

    started_s = time.monotonic()
    frame_count, times, _ = _read_frames(camera.url("/cam1"), max_frames=50, max_s=5.0)
    elapsed_s = time.monotonic() - started_s

    assert frame_count == 50
    assert len(times) >= 49
    assert times == sorted(times)
    assert times[-1] - times[0] == pytest.approx((len(times) - 1) / 25, abs=0.01)
    assert elapsed_s > 1.5  # served at real time (50 frames at 25 fps = 2 s), not as fast as read


def test_without_loop_the_stream_ends(
    rtsp_camera: RtspCameraFactory, make_video: VideoFactory
) -> None:
    camera = rtsp_camera({"/cam1": make_video(seconds=1.0)})

    frame_count, _, ended = _read_frames(camera.url("/cam1"), max_frames=1000, max_s=5.0)

    assert ended
    assert frame_count == 25


def test_loop_streams_past_the_end_of_the_file(
    rtsp_camera: RtspCameraFactory, make_video: VideoFactory
) -> None:
    camera = rtsp_camera({"/cam1": make_video(seconds=1.0)}, loop=True)

    frame_count, times, ended = _read_frames(camera.url("/cam1"), max_frames=45, max_s=5.0)

    assert not ended
    assert frame_count == 45
    # Timestamps keep increasing across the seam (one repeated time at most, as measured).
    steps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(step >= 0 for step in steps)
    assert sum(1 for step in steps if step == 0) <= 1


def test_two_mounts_and_restart_on_the_same_port(
    rtsp_camera: RtspCameraFactory, make_video: VideoFactory
) -> None:
    camera = rtsp_camera(
        {"/cam1": make_video(seconds=3.0), "/cam2": make_video(seconds=3.0, fps=20, name="b.mp4")}
    )
    port = camera.port
    assert _read_frames(camera.url("/cam2"), max_frames=5, max_s=5.0)[0] == 5

    assert camera.restart() == port

    assert _read_frames(camera.url("/cam1"), max_frames=5, max_s=5.0)[0] == 5
    camera.stop()
    assert not camera.running
