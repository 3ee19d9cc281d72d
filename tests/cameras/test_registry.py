"""The camera registry: warm configured cameras, on-demand cameras, one lease per camera."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.camera_registry import CameraRegistry
from server.cameras import (
    CameraBusy,
    CameraError,
    CameraOptions,
    CameraState,
)
from tests.support.observer import Observer
from tests.support.rtsp import VideoFactory

_OPTIONS = CameraOptions(loop_files=True)


@pytest.fixture
def clip(make_video: VideoFactory) -> Path:
    return make_video(seconds=2.0)


@pytest.fixture
def registry(clip: Path) -> Iterator[CameraRegistry]:
    cameras = CameraRegistry({"front": str(clip)}, _OPTIONS, idle_close_s=0.3)
    cameras.start()
    yield cameras
    cameras.close()


def _wait_until(condition: object, timeout_s: float) -> bool:
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


def test_configured_cameras_are_opened_at_start_and_kept_warm(registry: CameraRegistry) -> None:
    assert _wait_until(lambda: registry.statuses()["front"][0].state is CameraState.STREAMING, 5.0)
    observer = Observer()
    with registry.acquire("front", None, observer.on_frame, on_state=observer.on_state):
        observer.wait_frames(5, timeout_s=5.0)
    assert observer.frames[0].index == 0

    time.sleep(0.5)  # longer than idle_close_s: configured cameras stay open
    assert registry.statuses()["front"][0].state is CameraState.STREAMING


def test_one_lease_per_camera(registry: CameraRegistry) -> None:
    first, second = Observer(), Observer()
    lease = registry.acquire("front", None, first.on_frame)

    with pytest.raises(CameraBusy):
        registry.acquire("front", None, second.on_frame)
    first.wait_frames(3, timeout_s=5.0)
    lease.release()
    lease.release()  # twice is harmless

    with registry.acquire("front", None, second.on_frame):
        second.wait_frames(3, timeout_s=5.0)
    assert second.frames[0].index == 0


def test_on_demand_cameras_close_after_the_idle_time(
    registry: CameraRegistry, make_video: VideoFactory
) -> None:
    url = str(make_video(seconds=2.0, name="side.mp4"))
    observer = Observer()
    with registry.acquire("side", url, observer.on_frame) as lease:
        observer.wait_frames(3, timeout_s=5.0)
        camera = lease.camera
    with registry.acquire("side", url, observer.on_frame) as again:
        assert again.camera is camera  # reused within idle_close_s

    assert _wait_until(lambda: "side" not in registry.statuses(), 3.0)
    assert camera.status.state is CameraState.CLOSED


def test_bad_requests_are_camera_errors(registry: CameraRegistry, tmp_path: Path) -> None:
    observer = Observer()
    with pytest.raises(CameraError, match="not configured"):
        registry.acquire("nowhere", None, observer.on_frame)
    with pytest.raises(CameraError, match="another source URL"):
        registry.acquire("front", str(tmp_path / "other.mp4"), observer.on_frame)
    with pytest.raises(CameraError, match="no such file"):
        registry.acquire("side", str(tmp_path / "missing.mp4"), observer.on_frame)
    assert not isinstance(CameraError("x"), CameraBusy)


def test_a_failed_on_demand_camera_is_reopened_on_the_next_acquire(
    registry: CameraRegistry, tmp_path: Path, make_video: VideoFactory
) -> None:
    observer = Observer()
    late = tmp_path / "late.mp4"
    with pytest.raises(CameraError):
        registry.acquire("side", str(late), observer.on_frame)

    make_video(seconds=2.0, name="late.mp4")

    with registry.acquire("side", str(late), observer.on_frame):
        observer.wait_frames(3, timeout_s=5.0)


def test_lease_listeners_hear_state_changes_and_closing_ends_everything(
    registry: CameraRegistry, make_video: VideoFactory
) -> None:
    url = str(make_video(seconds=1.0, name="short.mp4"))
    observer = Observer()
    lease = registry.acquire("short", url, observer.on_frame, on_state=observer.on_state)
    observer.wait_frames(3, timeout_s=5.0)

    registry.close()

    assert lease.camera.status.state is CameraState.CLOSED
    assert CameraState.CLOSED in observer.states()
    with pytest.raises(CameraError, match="closed"):
        registry.acquire("front", None, observer.on_frame)
