"""BlazePose person detector: letterbox, SSD anchors, decoding, weighted NMS, detection → ROI.

Everything here follows MediaPipe's ``pose_detection_cpu.pbtxt`` and ``pose_detection_to_roi.pbtxt``
(parameters and their sources: shared/research/blazepose.md §1–§5). Pure numpy, no model calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from engines import RegionOfInterest

DETECTOR_INPUT_SIZE = 224
"""The detector looks at a 224×224 letterboxed copy of the whole frame."""

ANCHOR_COUNT = 2254
REGRESSOR_VALUES = 12
"""Per anchor: face box (dx, dy, w, h) then 4 keypoints (x, y)."""

MIN_DETECTION_SCORE = 0.5
"""``min_detection_confidence``: a detection scoring below this is dropped (equal is kept)."""

SCORE_CLIP = 100.0
NMS_MIN_OVERLAP = 0.3
"""Two boxes overlap when their IoU is strictly greater than this."""

ROI_SCALE = 1.25
"""The body ROI is 1.25 × (2 × hip-to-scale-point distance) on a side."""

_ANCHOR_STRIDES = (8, 16, 32, 32, 32)
_ANCHORS_PER_LAYER = 2
"""aspect_ratios [1.0] plus the interpolated-scale anchor (default 1.0): two per layer."""


@cache
def ssd_anchor_centers() -> NDArray[np.float32]:
    """The 2254 anchor centres (x, y) normalised to the detector input, in the model's order.

    Layers with the same stride share one grid; each grid cell repeats its centre once per anchor.
    All anchors have width = height = 1, so only the centres matter.
    """
    groups: list[tuple[int, int]] = []  # (stride, anchors per cell)
    for stride in _ANCHOR_STRIDES:
        if groups and groups[-1][0] == stride:
            groups[-1] = (stride, groups[-1][1] + _ANCHORS_PER_LAYER)
        else:
            groups.append((stride, _ANCHORS_PER_LAYER))
    blocks = []
    for stride, per_cell in groups:
        cells = math.ceil(DETECTOR_INPUT_SIZE / stride)
        centers_1d = (np.arange(cells, dtype=np.float64) + 0.5) / cells
        grid_y, grid_x = np.meshgrid(centers_1d, centers_1d, indexing="ij")
        cell_centers = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
        blocks.append(np.repeat(cell_centers, per_cell, axis=0))
    centers = np.concatenate(blocks).astype(np.float32)
    centers.setflags(write=False)
    return centers


@dataclass(frozen=True)
class Letterbox:
    """Where a W×H frame sits inside the square detector input (no rotation, zero padding)."""

    side_px: float
    """The square's side in frame pixels: max(W, H)."""
    offset_x_px: float
    """Frame x of the square's left edge: (W - side) / 2 (≤ 0)."""
    offset_y_px: float

    @classmethod
    def for_frame(cls, width_px: int, height_px: int) -> Letterbox:
        side = float(max(width_px, height_px))
        return cls(side, (width_px - side) / 2.0, (height_px - side) / 2.0)

    def tensor_to_frame_matrix(self) -> NDArray[np.float64]:
        """2×3 affine taking a detector-input pixel (u, v) to the frame pixel it samples."""
        scale = self.side_px / DETECTOR_INPUT_SIZE
        return np.array(
            [[scale, 0.0, self.offset_x_px], [0.0, scale, self.offset_y_px]], dtype=np.float64
        )

    def normalized_to_frame(self, points: NDArray[np.floating]) -> NDArray[np.float64]:
        """Points normalised to the letterboxed input (…, 2) → frame pixels (…, 2)."""
        offset = np.array([self.offset_x_px, self.offset_y_px], dtype=np.float64)
        frame_points: NDArray[np.float64] = np.asarray(points, dtype=np.float64) * self.side_px
        frame_points += offset
        return frame_points


@dataclass(frozen=True)
class Detection:
    """The first detection after weighted NMS, still in letterboxed normalised coordinates."""

    score: float
    box: NDArray[np.float64]
    """xmin, ymin, xmax, ymax of the face box."""
    keypoints: NDArray[np.float64]
    """4×2: hip centre, full-body scale point, shoulder centre, upper-body scale point."""


def best_detection(
    regressors: NDArray[np.float32],
    raw_scores: NDArray[np.float32],
    *,
    min_score: float = MIN_DETECTION_SCORE,
) -> Detection | None:
    """Decode one image's detector output and return the first weighted-NMS cluster, or None.

    ``regressors`` is (2254, 12), ``raw_scores`` (2254,) or (2254, 1) logits. MediaPipe keeps only
    the first detection NMS outputs, which is the cluster around the best-scoring box: its score is
    that box's score, its box and keypoints the score-weighted mean of every box overlapping it.
    """
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    widths = regressors[:, 2].astype(np.float64) / DETECTOR_INPUT_SIZE
    heights = regressors[:, 3].astype(np.float64) / DETECTOR_INPUT_SIZE
    keep = np.flatnonzero((scores >= min_score) & (widths >= 0.0) & (heights >= 0.0))
    if keep.size == 0:
        return None
    anchors = ssd_anchor_centers()[keep].astype(np.float64)
    values = regressors[keep].astype(np.float64) / DETECTOR_INPUT_SIZE
    centers = values[:, 0:2] + anchors
    half_sizes = values[:, 2:4] / 2.0
    boxes = np.concatenate([centers - half_sizes, centers + half_sizes], axis=1)
    keypoints = values[:, 4:12].reshape(-1, 4, 2) + anchors[:, None, :]
    kept_scores = scores[keep]

    top = int(np.argmax(kept_scores))
    overlap = intersection_over_union(boxes[top], boxes)
    members = overlap > NMS_MIN_OVERLAP
    members[top] = True  # a box always overlaps itself (guards against a degenerate zero area)
    weights = kept_scores[members]
    total = float(weights.sum())
    box = (weights[:, None] * boxes[members]).sum(axis=0) / total
    blended = (weights[:, None, None] * keypoints[members]).sum(axis=0) / total
    return Detection(score=float(kept_scores[top]), box=box, keypoints=blended)


def intersection_over_union(
    box: NDArray[np.float64], boxes: NDArray[np.float64]
) -> NDArray[np.float64]:
    """IoU of one (xmin, ymin, xmax, ymax) box with each row of ``boxes``; 0 if they don't touch."""
    left = np.maximum(box[0], boxes[:, 0])
    top = np.maximum(box[1], boxes[:, 1])
    right = np.minimum(box[2], boxes[:, 2])
    bottom = np.minimum(box[3], boxes[:, 3])
    intersection = np.clip(right - left, 0.0, None) * np.clip(bottom - top, 0.0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0.0, intersection / union, 0.0)
    return np.asarray(iou, dtype=np.float64)


def wrap_radians(angle_rad: float) -> float:
    """Wrap to [-π, π), as MediaPipe's ``NormalizeRadians``."""
    return angle_rad - 2.0 * math.pi * math.floor((angle_rad + math.pi) / (2.0 * math.pi))


def roi_from_alignment_points(
    center_px: NDArray[np.floating], scale_point_px: NDArray[np.floating]
) -> RegionOfInterest:
    """The body ROI from a centre and a scale/rotation point, both in frame pixels.

    Side = 1.25 × 2 × distance; rotation puts the scale point straight above the centre
    (``AlignmentPointsRectsCalculator`` at 90°, then ``RectTransformationCalculator`` × 1.25).
    """
    delta_x = float(scale_point_px[0] - center_px[0])
    delta_y = float(scale_point_px[1] - center_px[1])
    distance = math.hypot(delta_x, delta_y)
    rotation = wrap_radians(math.pi / 2.0 - math.atan2(-delta_y, delta_x))
    return RegionOfInterest(
        center_x_px=float(center_px[0]),
        center_y_px=float(center_px[1]),
        size_px=ROI_SCALE * 2.0 * distance,
        rotation_rad=rotation,
    )


def roi_from_detection(detection: Detection, letterbox: Letterbox) -> RegionOfInterest:
    """Body ROI from a detection's hip centre (keypoint 0) and scale point (keypoint 1)."""
    points = letterbox.normalized_to_frame(detection.keypoints[:2])
    return roi_from_alignment_points(points[0], points[1])
