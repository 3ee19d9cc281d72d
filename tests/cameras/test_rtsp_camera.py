"""A camera against the real gst-rtsp-server: normal run, stall, drop, restart, open failures."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from server.cameras import CameraError, CameraOptions, CameraState
from tests.support.observer import CameraFactory
from tests.support.rtsp import RtspCameraFactory, VideoFactory

pytestmark = pytest.mark.rtsp


def _assert_strictly_increasing(times: list[float]) -> None:
    steps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(steps) > 0, f"times not strictly increasing: {steps}"


def test_normal_run_hands_out_frames(
    rtsp_camera: RtspCameraFactory, make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    server = rtsp_camera({"/cam1": make_video(seconds=3.0)})
    camera, observer = open_camera(server.url("/cam1"))
    camera.wait_ready(5.0)
    camera.set_frame_sink(observer.on_frame)

    observer.wait_frames(30, timeout_s=5.0)

    frames = observer.frames[:30]
    assert [frame.index for frame in frames] == list(range(30))
    assert {frame.camera_id for frame in frames} == {"cam-test"}
    _assert_strictly_increasing([frame.time_s for frame in frames])
    steps = np.diff([frame.time_s for frame in frames])
    assert np.allclose(steps, 1 / 25, atol=1e-3)
    image = frames[0].image_rgb
    assert image.shape == (240, 320, 3)
    assert image.dtype == np.uint8
    assert image.flags.c_contiguous
    assert observer.states()[:2] == [CameraState.CONNECTING, CameraState.STREAMING]
    counters = camera.counters
    assert counters.packets_received >= counters.frames_decoded >= 30
    assert counters.open_latency_s is not None
    assert 0 < counters.open_latency_s < 5
    assert counters.reconnects == 0


def test_stall_is_detected_and_frames_flow_after_resume(
    rtsp_camera: RtspCameraFactory, make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    stall_timeout_s = 1.5
    server = rtsp_camera({"/cam1": make_video(seconds=2.0)}, loop=True)
    camera, observer = open_camera(
        server.url("/cam1"), CameraOptions(stall_timeout_s=stall_timeout_s)
    )
    camera.wait_ready(5.0)
    camera.set_frame_sink(observer.on_frame)
    observer.wait_frames(5, timeout_s=5.0)

    paused_at_s = time.monotonic()
    server.pause()
    observer.wait_for(
        lambda: observer.first_time_of(CameraState.STALLED) is not None, 10.0, "STALLED"
    )
    stalled_at_s = observer.first_time_of(CameraState.STALLED)
    assert stalled_at_s is not None
    assert stalled_at_s - paused_at_s <= stall_timeout_s + 1.0
    frames_before = len(observer.frames)
    server.resume()

    observer.wait_frames(frames_before + 25, timeout_s=15.0)
    observer.wait_for(lambda: camera.status.state is CameraState.STREAMING, 5.0, "STREAMING")
    _assert_strictly_increasing([frame.time_s for frame in observer.frames])


def test_server_killed_and_restarted_is_reconnected(
    rtsp_camera: RtspCameraFactory, make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    server = rtsp_camera({"/cam1": make_video(seconds=2.0)}, loop=True)
    camera, observer = open_camera(
        server.url("/cam1"), CameraOptions(reconnect_initial_s=0.2, reconnect_max_s=0.5)
    )
    camera.wait_ready(5.0)
    camera.set_frame_sink(observer.on_frame)
    observer.wait_frames(10, timeout_s=5.0)

    server.kill()
    observer.wait_for(
        lambda: CameraState.RECONNECTING in observer.states(), 5.0, "RECONNECTING after kill"
    )
    frames_before = len(observer.frames)
    time.sleep(1.0)  # a few failed attempts while the server is down
    server.restart()

    observer.wait_frames(frames_before + 10, timeout_s=10.0)
    assert camera.counters.reconnects == 1
    assert camera.status.state is CameraState.STREAMING
    times = [frame.time_s for frame in observer.frames]
    _assert_strictly_increasing(times)
    assert times[frames_before] - times[frames_before - 1] >= 1.0  # the outage shows as a gap
    assert [frame.index for frame in observer.frames] == list(range(len(observer.frames)))


def test_clients_dropped_by_the_server_reconnect(
    rtsp_camera: RtspCameraFactory, make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    server = rtsp_camera({"/cam1": make_video(seconds=2.0)}, loop=True)
    camera, observer = open_camera(server.url("/cam1"), CameraOptions(reconnect_initial_s=0.1))
    camera.wait_ready(5.0)
    camera.set_frame_sink(observer.on_frame)
    observer.wait_frames(5, timeout_s=5.0)

    server.drop_clients()

    observer.wait_for(lambda: camera.counters.reconnects == 1, 10.0, "a reconnect")
    frames_before = len(observer.frames)
    observer.wait_frames(frames_before + 5, timeout_s=5.0)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("case", ["wrong path", "refused port", "silent socket"])
def test_first_open_failure_is_a_clear_error_within_5_s(
    case: str,
    rtsp_camera: RtspCameraFactory,
    make_video: VideoFactory,
    open_camera: CameraFactory,
    silent_port: int,
) -> None:
    if case == "wrong path":
        url, expected = rtsp_camera({"/cam1": make_video(seconds=1.0)}).url("/cam1") + "x", "404"
    elif case == "refused port":
        url, expected = f"rtsp://127.0.0.1:{_closed_port()}/cam1", "connection refused"
    else:
        url, expected = f"rtsp://127.0.0.1:{silent_port}/cam1", "no answer within"
    started_s = time.monotonic()
    camera, observer = open_camera(url)

    with pytest.raises(CameraError, match=expected):
        camera.wait_ready(10.0)

    assert time.monotonic() - started_s < 5.0
    assert camera.status.state is CameraState.FAILED
    observer.wait_for(lambda: CameraState.FAILED in observer.states(), 1.0, "FAILED reported")


def test_a_persistent_camera_keeps_trying_until_the_server_appears(
    rtsp_camera: RtspCameraFactory, make_video: VideoFactory, open_camera: CameraFactory
) -> None:
    port = _closed_port()
    camera, observer = open_camera(
        f"rtsp://127.0.0.1:{port}/cam1",
        CameraOptions(reconnect_initial_s=0.1, reconnect_max_s=0.3),
        persistent=True,
    )
    observer.wait_for(lambda: CameraState.RECONNECTING in observer.states(), 5.0, "a retry")
    with pytest.raises(CameraError, match="connection refused"):
        camera.wait_ready(0.2)

    rtsp_camera({"/cam1": make_video(seconds=2.0)}, port=port)

    camera.wait_ready(10.0)
    assert camera.counters.reconnects == 0  # it never streamed before
