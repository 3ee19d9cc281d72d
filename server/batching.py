"""Batching frames across cameras for one pose engine.

Each camera has a one-frame slot. A camera thread puts its newest frame there and never waits; if
the slot still holds an older frame, the older one is skipped (and counted). So when inference falls
behind, every camera loses frames evenly instead of queueing without bound. Scoring works on frame
timestamps, so a skipped frame never breaks a repetition.

Batch threads (one per engine, or one per core on a CPU, where two callers of one thread each
beat one caller of two threads) take at most one frame from each camera, up to ``max_batch``. A
batch waits up to ``max_wait_ms`` after the first frame for the other cameras' frames (a batch is
worth more on a GPU than on a CPU, where the engine's preferred batch is small). Cameras are served
oldest-frame first, so none is starved. A camera with a frame in flight is not served again until
its result is back, because per-camera tracking is sequential.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from engines import CameraFrame, Pose, PoseEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchTiming:
    """How long one frame spent in each stage, in milliseconds."""

    handed_over_monotonic: float
    """When the camera handed the frame over (``time.monotonic()``), for end-to-end latency."""
    wait_ms: float
    """From the camera handing the frame over to the batch being run."""
    inference_ms: float
    """The engine call of the whole batch."""
    batch_size: int


@dataclass(frozen=True)
class CameraSink:
    """Where the results of one camera go. Called on the batch thread: must not block."""

    on_result: Callable[[CameraFrame, Pose | None, BatchTiming], object]
    on_skipped: Callable[[CameraFrame], object]
    on_error: Callable[[CameraFrame, Exception], object]


@dataclass
class _Slot:
    sink: CameraSink
    frame: CameraFrame | None = None
    handed_over_monotonic: float = 0.0
    in_flight: bool = False


class FrameBatcher:
    """Feeds one :class:`PoseEngine` from many cameras on one thread of its own."""

    def __init__(
        self,
        engine: PoseEngine,
        *,
        max_batch: int,
        max_wait_ms: float,
        workers: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """``workers`` batch threads share the engine; the engine must accept concurrent
        ``infer`` calls on different cameras (the ONNX Runtime engine does)."""
        self._engine = engine
        # The runtime states the batch it is most efficient at (1-2 on a CPU, larger on a GPU).
        self._max_batch = max(1, min(max_batch, engine.max_batch, engine.preferred_batch))
        self._max_wait_s = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._slots: dict[str, _Slot] = {}
        self._condition = threading.Condition()
        self._stopping = False
        self._idle_workers = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"fitscore-batcher-{number}", daemon=True)
            for number in range(max(1, workers))
        ]

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def workers(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout_s)

    def register(self, camera_id: str, sink: CameraSink) -> None:
        """Start accepting frames of ``camera_id``; its tracker starts afresh."""
        with self._condition:
            self._slots[camera_id] = _Slot(sink=sink)
        self._engine.forget(camera_id)

    def unregister(self, camera_id: str) -> CameraFrame | None:
        """Stop accepting frames of ``camera_id``; returns a frame that was still waiting."""
        with self._condition:
            slot = self._slots.pop(camera_id, None)
        return None if slot is None else slot.frame

    def pending(self, camera_id: str) -> bool:
        """Whether a frame of this camera waits or is being inferred."""
        with self._condition:
            slot = self._slots.get(camera_id)
            return slot is not None and (slot.frame is not None or slot.in_flight)

    def submit(self, frame: CameraFrame) -> bool:
        """Hand over the newest frame of a camera (never blocks). False if not registered."""
        skipped: CameraFrame | None = None
        with self._condition:
            slot = self._slots.get(frame.camera_id)
            if slot is None:
                return False
            skipped = slot.frame
            slot.frame = frame
            slot.handed_over_monotonic = time.monotonic()
            self._condition.notify_all()
        if skipped is not None:
            slot.sink.on_skipped(skipped)
        return True

    def _ready(self) -> list[tuple[str, _Slot]]:
        return [
            (camera_id, slot)
            for camera_id, slot in self._slots.items()
            if slot.frame is not None and not slot.in_flight
        ]

    def _take_batch(self) -> list[tuple[_Slot, CameraFrame, float]] | None:
        """Wait for frames and take one batch; None when stopping."""
        with self._condition:
            while not self._stopping and not self._ready():
                self._idle_workers += 1
                self._condition.wait()
                self._idle_workers -= 1
            if self._stopping:
                return None
            deadline = time.monotonic() + self._max_wait_s
            while not self._stopping:
                ready = self._ready()
                waiting_for_more = any(
                    slot.frame is None and not slot.in_flight for slot in self._slots.values()
                )
                remaining_s = deadline - time.monotonic()
                # An idle worker would take the next camera's frame at once: waiting for it to
                # fill this batch only adds latency (the CPU case, where batches do not pay).
                if (
                    len(ready) >= self._max_batch
                    or not waiting_for_more
                    or remaining_s <= 0
                    or self._idle_workers > 0
                ):
                    break
                self._condition.wait(remaining_s)
            ready = sorted(self._ready(), key=lambda item: item[1].handed_over_monotonic)
            batch: list[tuple[_Slot, CameraFrame, float]] = []
            for _, slot in ready[: self._max_batch]:
                assert slot.frame is not None
                batch.append((slot, slot.frame, slot.handed_over_monotonic))
                slot.frame = None
                slot.in_flight = True
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:  # another worker took the frames while this one waited
                continue
            try:
                self._infer(batch)
            finally:
                # Only now may the cameras be served again (and count as not pending): their
                # results have been handed to the sinks.
                self._finish(batch)

    def _infer(self, batch: list[tuple[_Slot, CameraFrame, float]]) -> None:
        frames = [frame for _, frame, _ in batch]
        started = time.monotonic()
        try:
            poses = self._engine.infer(frames)
        except Exception as error:  # an engine fault fails those frames, not the thread
            logger.exception("pose engine failed on a batch of %d", len(frames))
            for slot, frame, _ in batch:
                slot.sink.on_error(frame, error)
            return
        inference_ms = (time.monotonic() - started) * 1000.0
        if self._on_batch is not None:
            self._on_batch(len(frames), inference_ms)
        for (slot, frame, handed_over), pose in zip(batch, poses, strict=True):
            timing = BatchTiming(
                handed_over_monotonic=handed_over,
                wait_ms=(started - handed_over) * 1000.0,
                inference_ms=inference_ms,
                batch_size=len(frames),
            )
            slot.sink.on_result(frame, pose, timing)

    def _finish(self, batch: list[tuple[_Slot, CameraFrame, float]]) -> None:
        with self._condition:
            for slot, _, _ in batch:
                slot.in_flight = False
            self._condition.notify_all()
