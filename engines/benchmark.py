"""Engine benchmark: what the landmark model and the whole pipeline cost, decode excluded.

:func:`bench_engine` measures, on one runtime:

* the landmark model alone, images per second at batch 1, 2, 4 and 8 (synthetic crops: a CNN's
  cost does not depend on the pixels);
* the whole pipeline in tracking mode on a real clip, one frame per call as a single camera does:
  crop, model, decoding, smoothing, next ROI, and the detector where tracking is lost. Frames are
  decoded into memory first, so decoding is not counted. Model time is measured separately so the
  report shows what bounds the frame rate;
* the same clip played by several cameras on as many threads at once (how a server with one batch
  worker per core would run), aggregate frames per second.

``fitscore-server bench engine`` prints :func:`format_report` of the result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from engines import CameraFrame, load_runner
from engines.blazepose import (
    BlazePoseEngine,
    DetectorOutputs,
    LandmarkOutputs,
    ModelRunner,
    TrackerState,
)
from engines.landmarks import LANDMARK_INPUT_SIZE

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 2, 4, 8)


class _TimedRunner:
    """A runner that adds up the seconds spent in each model (per thread, no locking needed)."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self._times = threading.local()

    def _add(self, key: str, seconds: float) -> None:
        setattr(self._times, key, getattr(self._times, key, 0.0) + seconds)

    def seconds(self, key: str) -> float:
        return float(getattr(self._times, key, 0.0))

    def reset(self) -> None:
        self._times.detector = 0.0
        self._times.landmark = 0.0

    @property
    def name(self) -> str:
        return self._runner.name

    @property
    def preferred_batch(self) -> int:
        return self._runner.preferred_batch

    @property
    def max_batch(self) -> int:
        return self._runner.max_batch

    def detect(self, images: NDArray[np.float32]) -> DetectorOutputs:
        start = time.perf_counter()
        outputs = self._runner.detect(images)
        self._add("detector", time.perf_counter() - start)
        return outputs

    def landmarks(self, crops: NDArray[np.float32]) -> LandmarkOutputs:
        start = time.perf_counter()
        outputs = self._runner.landmarks(crops)
        self._add("landmark", time.perf_counter() - start)
        return outputs

    def close(self) -> None:
        self._runner.close()


@dataclass(frozen=True)
class LandmarkThroughput:
    batch: int
    images_per_s: float
    ms_per_call: float


@dataclass(frozen=True)
class PipelineThroughput:
    video: str
    cameras: int
    frames: int
    frames_with_pose: int
    detector_frames: int
    frames_per_s: float
    ms_per_frame: float
    landmark_model_ms_per_frame: float
    detector_model_ms_per_frame: float
    other_ms_per_frame: float
    """Crops, decoding of the outputs, smoothing, bookkeeping: all but the two models."""


def measure_landmark_model(
    runner: ModelRunner, batch: int, *, min_duration_s: float, seed: int = 0
) -> LandmarkThroughput:
    """Images per second of the landmark model alone at ``batch``."""
    crops = np.random.default_rng(seed).random(
        (batch, LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE, 3), dtype=np.float32
    )
    for _ in range(2):
        runner.landmarks(crops)
    calls = 0
    start = time.perf_counter()
    elapsed = 0.0
    while calls < 3 or elapsed < min_duration_s:
        runner.landmarks(crops)
        calls += 1
        elapsed = time.perf_counter() - start
    return LandmarkThroughput(
        batch=batch, images_per_s=calls * batch / elapsed, ms_per_call=elapsed / calls * 1e3
    )


def decode_video(
    path: Path, max_frames: int | None = None
) -> list[tuple[float, NDArray[np.uint8]]]:
    """(time_s, RGB image) of each frame, decoded up front."""
    frames: list[tuple[float, NDArray[np.uint8]]] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if max_frames is not None and index >= max_frames:
                break
            time_s = float(frame.time) if frame.time is not None else float(index)
            image = np.ascontiguousarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            frames.append((time_s, image))
    return frames


def _play(
    engine: BlazePoseEngine, frames: Sequence[tuple[float, NDArray[np.uint8]]], camera_id: str
) -> tuple[float, int, int]:
    """Feed one camera's frames one by one; returns (seconds in infer, poses, detector frames)."""
    engine.forget(camera_id)
    seconds = 0.0
    poses = 0
    detector_frames = 0
    for index, (time_s, image) in enumerate(frames):
        if engine.tracker_state(camera_id) is TrackerState.SEARCHING:
            detector_frames += 1
        start = time.perf_counter()
        (pose,) = engine.infer([CameraFrame(camera_id, index, time_s, image)])
        seconds += time.perf_counter() - start
        poses += pose is not None
    engine.forget(camera_id)
    return seconds, poses, detector_frames


def measure_pipeline(
    engine: BlazePoseEngine,
    runner: _TimedRunner,
    frames: Sequence[tuple[float, NDArray[np.uint8]]],
    video_name: str,
) -> PipelineThroughput:
    """One camera, one frame per call, decode excluded."""
    _play(engine, frames[: min(len(frames), 5)], "bench-warmup")
    runner.reset()
    seconds, poses, detector_frames = _play(engine, frames, "bench")
    count = len(frames)
    landmark_ms = runner.seconds("landmark") / count * 1e3
    detector_ms = runner.seconds("detector") / count * 1e3
    return PipelineThroughput(
        video=video_name,
        cameras=1,
        frames=count,
        frames_with_pose=poses,
        detector_frames=detector_frames,
        frames_per_s=count / seconds,
        ms_per_frame=seconds / count * 1e3,
        landmark_model_ms_per_frame=landmark_ms,
        detector_model_ms_per_frame=detector_ms,
        other_ms_per_frame=seconds / count * 1e3 - landmark_ms - detector_ms,
    )


def measure_concurrent(
    engine: BlazePoseEngine,
    frames: Sequence[tuple[float, NDArray[np.uint8]]],
    video_name: str,
    cameras: int,
) -> PipelineThroughput:
    """``cameras`` threads, each playing the clip as its own camera; aggregate wall-clock rate."""
    results: list[tuple[float, int, int]] = [(0.0, 0, 0)] * cameras
    barrier = threading.Barrier(cameras + 1)

    def worker(position: int) -> None:
        barrier.wait()
        results[position] = _play(engine, frames, f"bench-{position}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(cameras)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - start
    total = len(frames) * cameras
    return PipelineThroughput(
        video=video_name,
        cameras=cameras,
        frames=total,
        frames_with_pose=sum(result[1] for result in results),
        detector_frames=sum(result[2] for result in results),
        frames_per_s=total / wall_s,
        ms_per_frame=wall_s / total * 1e3,
        landmark_model_ms_per_frame=float("nan"),
        detector_model_ms_per_frame=float("nan"),
        other_ms_per_frame=float("nan"),
    )


def bench_engine(
    model_dir: Path,
    video: Path | None,
    *,
    runtime: str = "onnxruntime",
    threads: int | None = None,
    max_batch: int = 8,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    min_duration_s: float = 2.0,
    concurrent_cameras: int = 2,
    max_frames: int | None = None,
) -> dict[str, Any]:
    """Benchmark one runtime; ``video`` None skips the pipeline parts. Returns plain data."""
    runner = _TimedRunner(load_runner(runtime, model_dir, max_batch=max_batch, threads=threads))
    engine = BlazePoseEngine(runner)
    try:
        landmark = [
            measure_landmark_model(runner, batch, min_duration_s=min_duration_s)
            for batch in batch_sizes
            if batch <= max_batch
        ]
        result: dict[str, Any] = {
            "engine": engine.name,
            "runtime": runtime,
            "threads": threads,
            "max_batch": engine.max_batch,
            "preferred_batch": engine.preferred_batch,
            "landmark_model": [asdict(item) for item in landmark],
        }
        if video is not None:
            frames = decode_video(video, max_frames)
            logger.info("decoded %d frames of %s", len(frames), video.name)
            single = measure_pipeline(engine, runner, frames, video.name)
            result["pipeline"] = asdict(single)
            if concurrent_cameras > 1:
                both = measure_concurrent(engine, frames, video.name, concurrent_cameras)
                result["pipeline_concurrent"] = asdict(both)
        return result
    finally:
        engine.close()


def format_report(result: dict[str, Any]) -> str:
    """The benchmark result as a small text table."""
    lines = [
        f"engine {result['engine']}  (threads {result['threads'] or 'default'}, "
        f"max batch {result['max_batch']}, preferred batch {result['preferred_batch']})",
        "",
        "landmark model   batch   images/s   ms/call",
    ]
    for row in result["landmark_model"]:
        lines.append(
            f"                 {row['batch']:>5}   {row['images_per_s']:>8.1f}   "
            f"{row['ms_per_call']:>7.2f}"
        )
    for key, title in (("pipeline", "pipeline, 1 camera"), ("pipeline_concurrent", "")):
        row = result.get(key)
        if row is None:
            continue
        title = title or f"pipeline, {row['cameras']} cameras on {row['cameras']} threads"
        lines += [
            "",
            f"{title} ({row['video']}, decode excluded)",
            f"  frames {row['frames']}, with a person {row['frames_with_pose']}, "
            f"detector ran on {row['detector_frames']}",
            f"  {row['frames_per_s']:.1f} frames/s  ({row['ms_per_frame']:.2f} ms per frame)",
        ]
        if row["cameras"] == 1:
            lines.append(
                f"  of which landmark model {row['landmark_model_ms_per_frame']:.2f} ms, "
                f"detector {row['detector_model_ms_per_frame']:.2f} ms, "
                f"the rest {row['other_ms_per_frame']:.2f} ms"
            )
    return "\n".join(lines)
