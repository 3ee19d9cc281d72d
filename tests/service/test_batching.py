"""The batcher: one frame per camera per batch, even skipping when behind, faults contained."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from engines import CameraFrame, Pose
from server.batching import BatchTiming, CameraSink, FrameBatcher
from tests.service.fakes import FakeEngine

IMAGE = np.zeros((4, 4, 3), dtype=np.uint8)


class Recorder:
    """Collects what the batcher hands to one camera's sink."""

    def __init__(self) -> None:
        self.results: list[int] = []
        self.skipped: list[int] = []
        self.errors: list[int] = []
        self.done = threading.Condition()

    def sink(self) -> CameraSink:
        return CameraSink(self._on_result, self._on_skipped, self._on_error)

    def _on_result(self, frame: CameraFrame, pose: Pose | None, timing: BatchTiming) -> None:
        assert pose is not None
        assert pose.score == frame.index
        assert timing.batch_size >= 1
        with self.done:
            self.results.append(frame.index)
            self.done.notify_all()

    def _on_skipped(self, frame: CameraFrame) -> None:
        with self.done:
            self.skipped.append(frame.index)
            self.done.notify_all()

    def _on_error(self, frame: CameraFrame, error: Exception) -> None:
        with self.done:
            self.errors.append(frame.index)
            self.done.notify_all()

    def wait_for(self, count: int) -> None:
        with self.done:
            assert self.done.wait_for(
                lambda: len(self.results) + len(self.skipped) + len(self.errors) >= count, 10
            )


def _frame(camera_id: str, index: int) -> CameraFrame:
    return CameraFrame(camera_id=camera_id, index=index, time_s=index / 20, image_rgb=IMAGE)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def batcher(engine: FakeEngine) -> Iterator[FrameBatcher]:
    running = FrameBatcher(engine, max_batch=4, max_wait_ms=200)
    running.start()
    yield running
    engine.gate.set()
    running.stop()


def test_unregistered_camera_is_refused(batcher: FrameBatcher) -> None:
    assert not batcher.submit(_frame("nobody", 0))


def test_register_resets_tracking(batcher: FrameBatcher, engine: FakeEngine) -> None:
    batcher.register("cam1", Recorder().sink())
    assert engine.forgotten == ["cam1"]


def test_frames_of_several_cameras_share_a_batch(batcher: FrameBatcher, engine: FakeEngine) -> None:
    recorders = {name: Recorder() for name in ("a", "b", "c")}
    for name, recorder in recorders.items():
        batcher.register(name, recorder.sink())
    for name in recorders:
        batcher.submit(_frame(name, 0))
    for recorder in recorders.values():
        recorder.wait_for(1)
    # The batcher waited for the three cameras (max_wait_ms is generous) and ran them together.
    assert sorted(engine.batches[0]) == [("a", 0), ("b", 0), ("c", 0)]


def test_max_batch_is_respected(engine: FakeEngine) -> None:
    small = FrameBatcher(engine, max_batch=2, max_wait_ms=0)
    recorders = {f"cam{number}": Recorder() for number in range(5)}
    for name, recorder in recorders.items():
        small.register(name, recorder.sink())
        small.submit(_frame(name, 0))
    small.start()
    try:
        for recorder in recorders.values():
            recorder.wait_for(1)
    finally:
        small.stop()
    assert all(len(batch) <= 2 for batch in engine.batches)
    assert sum(len(batch) for batch in engine.batches) == 5


def test_preferred_batch_caps_the_batch() -> None:
    engine = FakeEngine(preferred_batch=1)
    assert FrameBatcher(engine, max_batch=8, max_wait_ms=10).max_batch == 1


def test_newer_frame_replaces_a_waiting_one(batcher: FrameBatcher, engine: FakeEngine) -> None:
    recorder = Recorder()
    batcher.register("cam1", recorder.sink())
    engine.gate.clear()
    batcher.submit(_frame("cam1", 0))
    assert engine.entered.wait(5)  # frame 0 is in flight, the engine is held
    for index in range(1, 6):
        batcher.submit(_frame("cam1", index))
    assert batcher.pending("cam1")
    engine.gate.set()
    recorder.wait_for(6)
    assert recorder.results == [0, 5]
    assert recorder.skipped == [1, 2, 3, 4]
    assert all(len(batch) == 1 for batch in engine.batches)


def test_skipping_is_even_across_cameras(batcher: FrameBatcher, engine: FakeEngine) -> None:
    names = ("a", "b", "c")
    recorders = {name: Recorder() for name in names}
    for name, recorder in recorders.items():
        batcher.register(name, recorder.sink())
    engine.gate.clear()
    for index in range(10):
        for name in names:
            batcher.submit(_frame(name, index))
    engine.gate.set()
    for recorder in recorders.values():
        recorder.wait_for(10)
    skipped = Counter({name: len(recorder.skipped) for name, recorder in recorders.items()})
    assert max(skipped.values()) - min(skipped.values()) <= 1
    for recorder in recorders.values():
        assert recorder.results[-1] == 9  # the newest frame of each camera is always judged


def test_engine_fault_fails_those_frames_only(batcher: FrameBatcher, engine: FakeEngine) -> None:
    recorder = Recorder()
    batcher.register("cam1", recorder.sink())
    engine.fail_next = True
    batcher.submit(_frame("cam1", 0))
    recorder.wait_for(1)
    batcher.submit(_frame("cam1", 1))
    recorder.wait_for(2)
    assert recorder.errors == [0]
    assert recorder.results == [1]


def test_unregister_returns_the_waiting_frame(batcher: FrameBatcher, engine: FakeEngine) -> None:
    recorder = Recorder()
    batcher.register("cam1", recorder.sink())
    engine.gate.clear()
    batcher.submit(_frame("cam1", 0))
    assert engine.entered.wait(5)
    batcher.submit(_frame("cam1", 1))
    waiting = batcher.unregister("cam1")
    assert waiting is not None
    assert waiting.index == 1
    assert not batcher.submit(_frame("cam1", 2))


def test_two_workers_never_share_a_camera() -> None:
    engine = FakeEngine(preferred_batch=1)
    engine.gate.clear()
    batcher = FrameBatcher(engine, max_batch=1, max_wait_ms=0, workers=2)
    recorders = {"a": Recorder(), "b": Recorder()}
    for name, recorder in recorders.items():
        batcher.register(name, recorder.sink())
    batcher.start()
    try:
        for index in range(3):
            for name in recorders:
                batcher.submit(_frame(name, index))
        engine.gate.set()
        for recorder in recorders.values():
            recorder.wait_for(3)
    finally:
        batcher.stop()
    assert batcher.workers == 2
    for recorder in recorders.values():
        judged = recorder.results
        assert judged == sorted(judged)  # a camera's frames are judged in order
        assert judged[-1] == 2
