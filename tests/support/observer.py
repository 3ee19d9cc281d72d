"""A thread-safe observer of what a camera hands out, and a fixture that opens cameras.

Used by tests/cameras and tests/recording (their conftest re-exports ``open_camera``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import pytest
from av.video.stream import VideoStream

from engines import CameraFrame
from server.cameras import Camera, CameraOptions, CameraState, CameraStatus


class Observer:
    """Collects frames, states and packets from a camera; waits for conditions."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.frames: list[CameraFrame] = []
        self.statuses: list[tuple[float, CameraStatus]] = []
        self.packets: list[av.Packet[Any]] = []
        self.segments_opened = 0
        self.segments_closed = 0
        self._changed = threading.Condition()

    # FrameSink / StateListener
    def on_frame(self, frame: CameraFrame) -> bool:
        with self._changed:
            self.frames.append(frame)
            self._changed.notify_all()
        return self.accept

    def on_state(self, status: CameraStatus) -> None:
        with self._changed:
            self.statuses.append((time.monotonic(), status))
            self._changed.notify_all()

    # PacketSink
    def open_segment(self, stream: VideoStream) -> None:
        with self._changed:
            self.segments_opened += 1

    def write_packet(self, packet: av.Packet[Any]) -> None:
        with self._changed:
            self.packets.append(packet)
            self._changed.notify_all()

    def close_segment(self) -> None:
        with self._changed:
            self.segments_closed += 1

    def states(self) -> list[CameraState]:
        with self._changed:
            return [status.state for _, status in self.statuses]

    def first_time_of(self, state: CameraState, after_s: float = 0.0) -> float | None:
        with self._changed:
            times = [at for at, s in self.statuses if s.state is state and at >= after_s]
        return times[0] if times else None

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline_s = time.monotonic() + timeout_s
        with self._changed:
            while not condition():
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
                self._changed.wait(min(remaining_s, 0.1))

    def wait_frames(self, count: int, timeout_s: float) -> None:
        self.wait_for(lambda: len(self.frames) >= count, timeout_s, f"{count} frames")


CameraFactory = Callable[..., tuple[Camera, Observer]]


@pytest.fixture
def open_camera() -> Iterator[CameraFactory]:
    """``open_camera(url, options=None, persistent=False, observer=None, decode=False)``
    returns ``(camera, observer)``; with ``decode`` the observer gets frames from the start."""
    cameras: list[Camera] = []

    def start(
        url: str,
        options: CameraOptions | None = None,
        *,
        persistent: bool = False,
        observer: Observer | None = None,
        decode: bool = False,
    ) -> tuple[Camera, Observer]:
        observer = observer or Observer()
        camera = Camera("cam-test", url, options, on_state=observer.on_state, persistent=persistent)
        cameras.append(camera)
        if decode:
            camera.set_frame_sink(observer.on_frame)
        camera.start()
        return camera, observer

    yield start
    for camera in cameras:
        camera.close()
