"""BlazePose landmark stage: the rotated crop, output decoding, heatmap refinement, projection.

Follows MediaPipe's ``pose_landmark_by_roi_cpu.pbtxt`` and the graphs it calls (shared/research/
blazepose.md §6). Every function works on a whole batch at once; nothing loops over landmarks.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from engines import RegionOfInterest

LANDMARK_INPUT_SIZE = 256
"""The landmark model looks at a 256×256 crop of the ROI."""

MODEL_LANDMARK_COUNT = 39
"""33 body landmarks, 2 auxiliary (next ROI), 4 unused."""

LANDMARK_VALUES = 5
"""Per landmark in the first output: x, y, z (crop pixels), visibility logit, presence logit."""

AUXILIARY_CENTER = 33
AUXILIARY_SCALE_POINT = 34

HEATMAP_SIZE = 64
HEATMAP_KERNEL_SIZE = 9
"""Side of the heatmap window. The graph text names 7, but MediaPipe 0.10.14's output matches a 9×9
window (the option's proto default) to 0.01 px on the first frame of every shared clip, and 7×7
misses it by 1–3 px on a third of the landmarks; measured, see tests/engines/test_parity.py."""
MIN_HEATMAP_CONFIDENCE = 0.5
"""A landmark is moved to its heatmap's weighted centre when the window's peak reaches this."""


def crop_matrix(roi: RegionOfInterest) -> NDArray[np.float64]:
    """2×3 affine taking crop pixel (u, v) to the frame pixel it samples.

    Crop pixel u samples centre + R(θ)·((u/256 − ½)·S, (v/256 − ½)·S), as MediaPipe's
    ``ImageToTensorCalculator`` does; feed it to ``cv2.warpAffine`` with ``WARP_INVERSE_MAP``.
    """
    cos = math.cos(roi.rotation_rad)
    sin = math.sin(roi.rotation_rad)
    step = roi.size_px / LANDMARK_INPUT_SIZE
    half = roi.size_px / 2.0
    return np.array(
        [
            [cos * step, -sin * step, roi.center_x_px - half * cos + half * sin],
            [sin * step, cos * step, roi.center_y_px - half * sin - half * cos],
        ],
        dtype=np.float64,
    )


def _sigmoid(values: NDArray[np.floating]) -> NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-values.astype(np.float64))), dtype=np.float64)


def decode_landmarks(raw_landmarks: NDArray[np.float32]) -> NDArray[np.float64]:
    """(N, 195) model output → (N, 39, 5): x, y, z normalised to the crop; visibility, presence.

    z is divided by the crop width like x (MediaPipe's ``normalize_z`` 1.0).
    """
    landmarks = raw_landmarks.reshape(-1, MODEL_LANDMARK_COUNT, LANDMARK_VALUES).astype(np.float64)
    landmarks[..., 0:3] /= LANDMARK_INPUT_SIZE
    landmarks[..., 3:5] = _sigmoid(landmarks[..., 3:5])
    return landmarks


_KERNEL_OFFSETS = np.arange(HEATMAP_KERNEL_SIZE) - (HEATMAP_KERNEL_SIZE - 1) // 2


def refine_with_heatmap(
    landmarks: NDArray[np.float64], heatmap_logits: NDArray[np.float32]
) -> NDArray[np.float64]:
    """Move x, y to the confidence-weighted centre of a 9×9 heatmap window (in place; returned).

    ``landmarks`` (N, 39, ≥2) normalised to the crop; ``heatmap_logits`` (N, 64, 64, 39), NHWC.
    Reproduces ``RefineLandmarksFromHeatmapCalculator``: the start cell is truncated toward zero,
    the centre uses integer cell indices (no +½), and, like MediaPipe, only the column is checked
    against the map's height (a row a little past the bottom keeps the part of its window inside).
    """
    batch, count = landmarks.shape[:2]
    size = HEATMAP_SIZE
    center_cols = np.trunc(landmarks[..., 0] * size).astype(np.int64)  # (N, 39)
    center_rows = np.trunc(landmarks[..., 1] * size).astype(np.int64)
    considered = (center_cols >= 0) & (center_cols < size) & (center_rows >= 0)

    rows = center_rows[..., :, None, None] + _KERNEL_OFFSETS[:, None]  # (N, 39, 7, 1)
    cols = center_cols[..., :, None, None] + _KERNEL_OFFSETS[None, :]  # (N, 39, 1, 7)
    rows, cols = np.broadcast_arrays(rows, cols)  # (N, 39, 7, 7)
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    image_index = np.arange(batch)[:, None, None, None]
    channel_index = np.arange(count)[None, :, None, None]
    logits = heatmap_logits[
        image_index, np.clip(rows, 0, size - 1), np.clip(cols, 0, size - 1), channel_index
    ]
    confidence = np.where(inside, _sigmoid(logits), 0.0)

    total = confidence.sum(axis=(2, 3))
    peak = confidence.max(axis=(2, 3))
    refine = considered & (peak >= MIN_HEATMAP_CONFIDENCE) & (total > 0.0)
    safe_total = np.where(total > 0.0, total, 1.0)
    refined_x = (confidence * cols).sum(axis=(2, 3)) / safe_total / size
    refined_y = (confidence * rows).sum(axis=(2, 3)) / safe_total / size
    landmarks[..., 0] = np.where(refine, refined_x, landmarks[..., 0])
    landmarks[..., 1] = np.where(refine, refined_y, landmarks[..., 1])
    return landmarks


def roi_arrays(rois: list[RegionOfInterest]) -> NDArray[np.float64]:
    """(N, 4) rows of centre x, centre y, size, rotation."""
    return np.array(
        [[roi.center_x_px, roi.center_y_px, roi.size_px, roi.rotation_rad] for roi in rois],
        dtype=np.float64,
    ).reshape(-1, 4)


def project_to_frame(
    landmarks: NDArray[np.float64], rois: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Crop-normalised landmarks (N, K, 5) → frame pixels; z scaled like x (crop size = ROI side).

    ``rois`` is (N, 4) from :func:`roi_arrays`. Visibility and presence are copied unchanged.
    """
    center_x = rois[:, 0, None]
    center_y = rois[:, 1, None]
    size = rois[:, 2, None]
    cos = np.cos(rois[:, 3])[:, None]
    sin = np.sin(rois[:, 3])[:, None]
    offset_x = landmarks[..., 0] - 0.5
    offset_y = landmarks[..., 1] - 0.5
    projected = landmarks.copy()
    projected[..., 0] = center_x + (offset_x * cos - offset_y * sin) * size
    projected[..., 1] = center_y + (offset_x * sin + offset_y * cos) * size
    projected[..., 2] = landmarks[..., 2] * size
    return projected
