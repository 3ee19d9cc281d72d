"""Hand-written fakes for service tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from engines import CameraFrame, Pose, RegionOfInterest


class FakeEngine:
    """A pose engine that records its batches and can be held or made to fail."""

    def __init__(self, *, preferred_batch: int = 8, max_batch: int = 8) -> None:
        self.name = "fake"
        self.preferred_batch = preferred_batch
        self.max_batch = max_batch
        self.batches: list[list[tuple[str, int]]] = []
        self.forgotten: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False

    def infer(self, frames: Sequence[CameraFrame]) -> list[Pose | None]:
        self.entered.set()
        self.gate.wait(10)
        cameras = [frame.camera_id for frame in frames]
        assert len(cameras) == len(set(cameras)), "two frames of one camera in a batch"
        self.batches.append([(frame.camera_id, frame.index) for frame in frames])
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("engine fault")
        roi = RegionOfInterest(0.0, 0.0, 1.0, 0.0)
        return [Pose(np.zeros((33, 5), np.float32), float(frame.index), roi) for frame in frames]

    def forget(self, camera_id: str) -> None:
        self.forgotten.append(camera_id)

    def close(self) -> None:
        pass
