"""Helpers for the BlazePose pipeline tests: shared footage, model paths and a fake model runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import onnx
import pytest
from numpy.typing import NDArray

from engines.blazepose import DetectorOutputs, LandmarkOutputs
from engines.detection import ANCHOR_COUNT, DETECTOR_INPUT_SIZE, ssd_anchor_centers
from engines.landmarks import LANDMARK_INPUT_SIZE, MODEL_LANDMARK_COUNT
from engines.models import ModelFiles
from engines.onnx_runtime import HEATMAP_OUTPUT
from engines.tflite_onnx import LANDMARK_OUTPUTS, convert

SHARED_DIR = Path(__file__).resolve().parents[3] / "shared"
MEDIA_DIR = SHARED_DIR / "media"
REFERENCE_DIR = SHARED_DIR / "reference"

BODY_JOINTS = (11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
"""Shoulders, elbows, wrists, hips, knees, ankles: what the judging uses."""

CLIPS = (
    "pushup_side_gg",
    "pushup_45deg_da",
    "pushup_front_da",
    "situp_side_jl",
    "pullup_rear_da",
)


def shared_clip(name: str) -> tuple[Path, Path]:
    """(video, MediaPipe reference) of a shared clip; skips the test when shared/ is absent."""
    video = MEDIA_DIR / f"{name}.mp4"
    reference = REFERENCE_DIR / f"{name}.mediapipe.json"
    if not (video.is_file() and reference.is_file()):
        pytest.skip(f"shared footage {name} not found under {SHARED_DIR} (it is not in the repo)")
    return video, reference


def write_video(path: Path, frame_count: int, rate: int = 25) -> None:
    """A small 64×48 MPEG-4 clip whose frame k is uniformly grey at 20·k."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, rate)
        for index in range(frame_count):
            image = np.full((48, 64, 3), index * 20, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def has_heatmap_output(path: Path) -> bool:
    return any(output.name == HEATMAP_OUTPUT for output in onnx.load(str(path)).graph.output)


def landmark_model_with_heatmap(model_files: ModelFiles, directory: Path) -> Path:
    """The provisioned landmark model when it keeps the heatmap head, else one converted here.

    MediaPipe refines every landmark with the heatmap; without that head the pipeline cannot match
    its output (test_runtimes checks the provisioned model separately).
    """
    if has_heatmap_output(model_files.landmark_onnx):
        return model_files.landmark_onnx
    outputs = tuple(dict.fromkeys((*LANDMARK_OUTPUTS, HEATMAP_OUTPUT)))
    model = convert(
        model_files.landmark_tflite.read_bytes(), output_names=outputs, name="pose_landmark_full"
    )
    path = directory / "pose_landmark_full.onnx"
    onnx.save(model, str(path))
    return path


@dataclass
class FakeRunner:
    """A hand-written model runner: a person whose pose the test decides, and a call log.

    The detector reports one detection at anchor ``anchor`` whose hip centre and scale point sit at
    ``hip`` and ``scale_point`` (normalised to the detector input), or nothing when ``detected`` is
    False. The landmark model puts all 39 landmarks on a grid around the crop centre and the two
    auxiliary ones at ``auxiliary`` (crop pixels); the pose flag comes from ``flags`` (one per
    call, the last one repeated).
    """

    detected: bool = True
    anchor: int = 1000
    hip: tuple[float, float] = (0.5, 0.5)
    scale_point: tuple[float, float] = (0.5, 0.3)
    auxiliary: tuple[tuple[float, float], tuple[float, float]] = ((128.0, 128.0), (128.0, 25.6))
    flags: list[float] = field(default_factory=lambda: [0.9])
    max_batch_size: int = 8
    detector_batches: list[int] = field(default_factory=list)
    landmark_batches: list[int] = field(default_factory=list)
    crops: list[NDArray[np.float32]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "fake"

    @property
    def preferred_batch(self) -> int:
        return 1

    @property
    def max_batch(self) -> int:
        return self.max_batch_size

    def detect(self, images: NDArray[np.float32]) -> DetectorOutputs:
        assert images.shape[1:] == (DETECTOR_INPUT_SIZE, DETECTOR_INPUT_SIZE, 3)
        count = images.shape[0]
        self.detector_batches.append(count)
        regressors = np.zeros((count, ANCHOR_COUNT, 12), dtype=np.float32)
        scores = np.full((count, ANCHOR_COUNT, 1), -10.0, dtype=np.float32)
        if self.detected:
            anchor_x, anchor_y = ssd_anchor_centers()[self.anchor]
            size = DETECTOR_INPUT_SIZE
            hip_x, hip_y = self.hip
            scale_x, scale_y = self.scale_point
            regressors[:, self.anchor, 0:4] = [0.0, 0.0, 20.0, 20.0]
            regressors[:, self.anchor, 4:6] = [(hip_x - anchor_x) * size, (hip_y - anchor_y) * size]
            regressors[:, self.anchor, 6:8] = [
                (scale_x - anchor_x) * size,
                (scale_y - anchor_y) * size,
            ]
            scores[:, self.anchor, 0] = 5.0
        return DetectorOutputs(regressors=regressors, scores=scores)

    def landmarks(self, crops: NDArray[np.float32]) -> LandmarkOutputs:
        assert crops.shape[1:] == (LANDMARK_INPUT_SIZE, LANDMARK_INPUT_SIZE, 3)
        count = crops.shape[0]
        self.landmark_batches.append(count)
        self.crops.append(crops.copy())
        grid = np.linspace(64.0, 192.0, MODEL_LANDMARK_COUNT)
        values = np.zeros((count, MODEL_LANDMARK_COUNT, 5), dtype=np.float32)
        values[..., 0] = grid
        values[..., 1] = grid[::-1]
        values[..., 2] = 10.0
        values[..., 3] = 2.0  # visibility logit
        values[..., 4] = 3.0  # presence logit
        values[:, 33, 0:2] = self.auxiliary[0]
        values[:, 34, 0:2] = self.auxiliary[1]
        flag = self.flags[min(len(self.landmark_batches) - 1, len(self.flags) - 1)]
        return LandmarkOutputs(
            landmarks=values.reshape(count, -1),
            pose_flag=np.full((count, 1), flag, dtype=np.float32),
            heatmaps=None,
        )

    def close(self) -> None:
        """Nothing to release."""
