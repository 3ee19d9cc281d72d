"""Pose engines: the one interface the server sees, and the types that cross it.

The server imports only what is defined here (and ``load_engine``). Every runtime (ONNX Runtime on
CPU, TensorRT FP16 on a GPU) sits behind :class:`PoseEngine`; the BlazePose pipeline that turns a
batch of camera frames into landmarks is runtime-agnostic.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from engines.blazepose import ModelRunner

LANDMARK_COUNT = 33
"""BlazePose body landmarks per person."""

KEYPOINT_FIELDS = ("x_px", "y_px", "z", "visibility", "presence")
"""The columns of :attr:`Pose.keypoints`, in order."""


@dataclass(frozen=True)
class CameraFrame:
    """One decoded frame from one camera, as it enters a batch."""

    camera_id: str
    index: int
    """Frame number on this camera since its session began (0-based)."""
    time_s: float
    """Presentation time in seconds on the camera's own clock."""
    image_rgb: NDArray[np.uint8]
    """H×W×3 RGB, C-contiguous."""


@dataclass(frozen=True)
class RegionOfInterest:
    """The rotated square the landmark model looked at, in image pixels."""

    center_x_px: float
    center_y_px: float
    size_px: float
    rotation_rad: float


@dataclass(frozen=True)
class Pose:
    """One person's landmarks in one frame."""

    keypoints: NDArray[np.float32]
    """33×5: x_px, y_px, z (same scale as x, hips at 0), visibility, presence (both 0..1)."""
    score: float
    """The landmark model's pose presence score, 0..1."""
    roi: RegionOfInterest


class PoseEngine(Protocol):
    """Turns camera frames into poses. Holds one tracker per camera.

    ``infer`` takes at most one frame per camera (tracking is sequential per camera) and returns one
    result per frame, in order: a :class:`Pose`, or ``None`` when no person was found.
    The BlazePose engine also accepts concurrent ``infer`` calls from several threads as long as
    they share no camera: on a CPU that is how both cores get used (one batch worker per core).
    """

    @property
    def name(self) -> str: ...

    @property
    def preferred_batch(self) -> int:
        """The batch size at which this runtime is most efficient per frame."""
        ...

    @property
    def max_batch(self) -> int: ...

    def infer(self, frames: Sequence[CameraFrame]) -> list[Pose | None]: ...

    def forget(self, camera_id: str) -> None:
        """Drop the tracking state of a camera (its next frame runs the detector)."""
        ...

    def close(self) -> None: ...


class EngineError(Exception):
    """A pose engine could not be built or run."""


class RuntimeUnavailableError(EngineError):
    """The requested runtime is not installed or has no device here (TensorRT without a GPU)."""


class Runtime(enum.StrEnum):
    ONNXRUNTIME = "onnxruntime"
    """ONNX Runtime: CPU by default, its CUDA provider when installed. The default."""
    TENSORRT = "tensorrt"
    """TensorRT FP16 on an NVIDIA GPU."""


def load_runner(
    runtime: str,
    model_dir: Path,
    *,
    max_batch: int = 8,
    threads: int | None = None,
) -> ModelRunner:
    """The bare model runner behind :func:`load_engine` (benchmarks time it on its own)."""
    from engines.models import ModelError, locate_models

    try:
        chosen = Runtime(runtime)
    except ValueError:
        known = ", ".join(item.value for item in Runtime)
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {known}") from None
    try:
        files = locate_models(model_dir)
    except ModelError as error:
        raise EngineError(str(error)) from error
    if chosen is Runtime.TENSORRT:
        from engines.tensorrt_runtime import TensorRtRunner

        return TensorRtRunner(files.detector_onnx, files.landmark_onnx, max_batch=max_batch)
    from engines.onnx_runtime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(
        files.detector_onnx, files.landmark_onnx, max_batch=max_batch, threads=threads
    )


def load_engine(
    runtime: str,
    model_dir: Path,
    *,
    max_batch: int = 8,
    threads: int | None = None,
) -> PoseEngine:
    """Build the BlazePose engine on ``runtime`` from the provisioned models in ``model_dir``.

    ``runtime`` is ``"onnxruntime"`` (the default choice: CPU, or its CUDA provider when installed)
    or ``"tensorrt"`` (FP16 on an NVIDIA GPU). ``max_batch`` caps the frames (= cameras) per
    ``infer`` call; ``threads`` is ONNX Runtime's intra-op thread count per model (default 1, see
    :mod:`engines.onnx_runtime`), ignored by TensorRT. Raises :class:`EngineError` (models
    unusable), :class:`RuntimeUnavailableError` (runtime absent) or ``ValueError`` (unknown
    runtime, bad numbers).
    """
    from engines.blazepose import BlazePoseEngine

    return BlazePoseEngine(load_runner(runtime, model_dir, max_batch=max_batch, threads=threads))
