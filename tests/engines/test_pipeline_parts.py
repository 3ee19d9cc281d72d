"""The BlazePose pipeline's pure parts: detector decoding, ROI geometry, crops, heatmap
refinement, projection and smoothing, each checked against MediaPipe's definitions."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from engines import RegionOfInterest
from engines.detection import (
    Letterbox,
    best_detection,
    intersection_over_union,
    roi_from_alignment_points,
    ssd_anchor_centers,
    wrap_radians,
)
from engines.landmarks import (
    crop_matrix,
    decode_landmarks,
    project_to_frame,
    refine_with_heatmap,
    roi_arrays,
)
from engines.smoothing import (
    AUXILIARY_LANDMARK_FILTER,
    POSE_LANDMARK_FILTER,
    OneEuroFilter,
    VisibilityFilter,
)
from engines.warping import FixedPointWarper

# --- detector -------------------------------------------------------------------------------


def test_anchors_follow_mediapipe_layout() -> None:
    centers = ssd_anchor_centers()
    assert centers.shape == (2254, 2)
    np.testing.assert_allclose(centers[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_array_equal(centers[1], centers[0])  # 2 anchors per stride-8 cell
    np.testing.assert_allclose(centers[2], [1.5 / 28, 0.5 / 28])  # x varies fastest
    np.testing.assert_allclose(centers[1567], [27.5 / 28, 27.5 / 28])
    np.testing.assert_allclose(centers[1568], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(centers[1960:1966], [[0.5 / 7, 0.5 / 7]] * 6)  # 3 layers merged
    np.testing.assert_allclose(centers[2253], [6.5 / 7, 6.5 / 7])


def detector_output(
    entries: list[tuple[int, tuple[float, ...], tuple[float, ...], float]],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(anchor, box dx dy w h in input pixels, 8 keypoint offsets, score logit) per detection."""
    regressors = np.zeros((2254, 12), dtype=np.float32)
    scores = np.full((2254, 1), -50.0, dtype=np.float32)
    for anchor, box, keypoints, logit in entries:
        regressors[anchor, 0:4] = box
        regressors[anchor, 4:12] = keypoints
        scores[anchor, 0] = logit
    return regressors, scores


def test_detection_decodes_offsets_relative_to_its_anchor() -> None:
    anchor = 1600
    regressors, scores = detector_output(
        [(anchor, (22.4, -11.2, 44.8, 22.4), (2.24, 4.48, 0, -22.4, 0, 0, 0, 0), 2.0)]
    )
    detection = best_detection(regressors, scores)
    assert detection is not None
    center = ssd_anchor_centers()[anchor].astype(np.float64)
    assert detection.score == pytest.approx(1 / (1 + math.exp(-2.0)))
    expected_box = np.concatenate([np.add(center, [0.0, -0.1]), np.add(center, [0.2, 0.0])])
    np.testing.assert_allclose(detection.box, expected_box, atol=1e-6)
    np.testing.assert_allclose(detection.keypoints[0], np.add(center, [0.01, 0.02]), atol=1e-6)
    np.testing.assert_allclose(detection.keypoints[1], np.add(center, [0.0, -0.1]), atol=1e-6)


def test_weighted_nms_blends_the_best_cluster_and_keeps_its_top_score() -> None:
    box = (0.0, 0.0, 40.0, 40.0)
    regressors, scores = detector_output(
        [
            (1000, box, (0.0,) * 8, 3.0),
            (1001, box, (22.4,) * 8, 1.0),  # same anchor centre, same box: overlaps
            (100, box, (-22.4,) * 8, 2.0),  # far away: a cluster of its own
        ]
    )
    detection = best_detection(regressors, scores)
    assert detection is not None
    high, low = 1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(-1.0))
    assert detection.score == pytest.approx(high)
    center = ssd_anchor_centers()[1000].astype(np.float64)
    expected = center + 0.1 * low / (high + low)
    np.testing.assert_allclose(detection.keypoints, np.tile(expected, (4, 1)), atol=1e-6)


@pytest.mark.parametrize(("logit", "found"), [(0.0, True), (-0.01, False)])
def test_detection_threshold_keeps_a_score_equal_to_it(logit: float, found: bool) -> None:
    regressors, scores = detector_output([(5, (0, 0, 10, 10), (0.0,) * 8, logit)])
    assert (best_detection(regressors, scores) is not None) is found


def test_detection_with_negative_size_is_dropped() -> None:
    regressors, scores = detector_output([(5, (0, 0, -10, 10), (0.0,) * 8, 5.0)])
    assert best_detection(regressors, scores) is None


def test_intersection_over_union() -> None:
    box = np.array([0.0, 0.0, 2.0, 2.0])
    boxes = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    np.testing.assert_allclose(intersection_over_union(box, boxes), [1.0, 1 / 3, 0.0])


@pytest.mark.parametrize(
    ("scale_point", "rotation"),
    [
        ((100, 100), 0.0),
        ((200, 200), math.pi / 2),
        ((0, 200), -math.pi / 2),
        ((100, 300), -math.pi),
    ],
)
def test_roi_turns_the_scale_point_upwards(scale_point: tuple[int, int], rotation: float) -> None:
    roi = roi_from_alignment_points(np.array([100.0, 200.0]), np.array(scale_point, float))
    assert (roi.center_x_px, roi.center_y_px) == (100.0, 200.0)
    assert roi.size_px == pytest.approx(250.0)
    assert roi.rotation_rad == pytest.approx(rotation)


def test_wrap_radians_lands_in_minus_pi_to_pi() -> None:
    assert wrap_radians(math.pi) == pytest.approx(-math.pi)
    assert wrap_radians(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert wrap_radians(-math.pi / 4) == pytest.approx(-math.pi / 4)


@pytest.mark.parametrize(
    ("size", "offset"), [((1280, 720), (0.0, -280.0)), ((540, 960), (-210.0, 0.0))]
)
def test_letterbox_centres_the_frame_in_a_square(
    size: tuple[int, int], offset: tuple[float, float]
) -> None:
    letterbox = Letterbox.for_frame(*size)
    assert (letterbox.offset_x_px, letterbox.offset_y_px) == offset
    matrix = letterbox.tensor_to_frame_matrix()
    np.testing.assert_allclose(matrix @ [0, 0, 1], offset)
    np.testing.assert_allclose(matrix @ [224, 224, 1], np.add(offset, max(size)))
    np.testing.assert_allclose(
        letterbox.normalized_to_frame(np.array([0.5, 0.5])), np.divide(size, 2)
    )


# --- landmark stage -------------------------------------------------------------------------


def test_crop_puts_the_scale_point_straight_above_the_centre() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        center, scale_point = rng.uniform(0, 1000, size=(2, 2))
        roi = roi_from_alignment_points(center, scale_point)
        distance = np.hypot(*(scale_point - center))
        above = 128.0 - 256.0 * distance / roi.size_px
        np.testing.assert_allclose(crop_matrix(roi) @ [128.0, 128.0, 1.0], center, atol=1e-9)
        np.testing.assert_allclose(crop_matrix(roi) @ [128.0, above, 1.0], scale_point, atol=1e-9)


def test_projection_matches_the_crop_geometry() -> None:
    rng = np.random.default_rng(4)
    rois = [RegionOfInterest(*rng.uniform([0, 0, 50, -3], [1000, 700, 900, 3])) for _ in range(3)]
    points = np.zeros((3, 5, 5))
    points[..., 0:3] = rng.uniform(-0.2, 1.2, size=(3, 5, 3))
    points[..., 3:5] = 0.7
    projected = project_to_frame(points, roi_arrays(rois))
    for image, roi in enumerate(rois):
        homogeneous = np.column_stack([points[image, :, 0:2] * 256.0, np.ones(5)])
        np.testing.assert_allclose(projected[image, :, 0:2], homogeneous @ crop_matrix(roi).T)
        np.testing.assert_allclose(projected[image, :, 2], points[image, :, 2] * roi.size_px)
        np.testing.assert_array_equal(projected[image, :, 3:5], 0.7)


def test_landmark_decoding_scales_by_the_crop_and_applies_sigmoids() -> None:
    raw = np.zeros((1, 195), dtype=np.float32)
    raw[0, 0:5] = [128.0, 64.0, 256.0, 0.0, math.log(3.0)]
    decoded = decode_landmarks(raw)
    assert decoded.shape == (1, 39, 5)
    np.testing.assert_allclose(decoded[0, 0], [0.5, 0.25, 1.0, 0.5, 0.75], rtol=1e-6)


def heatmap_with_blob(cells: dict[tuple[int, int], float], channel: int = 0) -> NDArray[np.float32]:
    """Logits of -30 everywhere except the given (row, col) → probability cells of one channel."""
    heatmap = np.full((1, 64, 64, 39), -30.0, dtype=np.float32)
    for (row, col), probability in cells.items():
        heatmap[0, row, col, channel] = math.log(probability / (1.0 - probability))
    return heatmap


def landmark_at(x: float, y: float) -> NDArray[np.float64]:
    landmarks = np.zeros((1, 39, 5))
    landmarks[0, :, 0:2] = 0.25
    landmarks[0, 0, 0:2] = [x, y]
    return landmarks


def test_heatmap_moves_a_landmark_to_the_window_centroid_by_cell_index() -> None:
    heatmap = heatmap_with_blob({(20, 31): 0.9, (20, 34): 0.9, (24, 30): 0.3})
    refined = refine_with_heatmap(landmark_at(31.5 / 64, 20.2 / 64), heatmap)
    expected_x = (31 * 0.9 + 34 * 0.9 + 30 * 0.3) / 2.1 / 64
    expected_y = (20 * 0.9 + 20 * 0.9 + 24 * 0.3) / 2.1 / 64
    np.testing.assert_allclose(refined[0, 0, 0:2], [expected_x, expected_y], rtol=1e-6)
    np.testing.assert_array_equal(refined[0, 1:, 0:2], 0.25)  # other channels have no peak


@pytest.mark.parametrize(
    ("x", "y", "cells", "moved"),
    [
        (0.5, 0.5, {(32, 32): 0.45}, False),  # peak below 0.5: kept
        (0.5, 0.5, {(36, 36): 0.9}, True),  # 4 cells away: inside the 9×9 window
        (0.5, 0.5, {(37, 32): 0.9}, False),  # 5 cells away: outside
        (-0.001, 0.5, {(32, 0): 0.9}, True),  # truncation toward zero: column 0
        (-0.02, 0.5, {(32, 0): 0.9}, False),  # column -1: outside the map
        (0.5, 1.02, {(63, 32): 0.9}, True),  # row 65: only the column is range-checked
        (0.5, 1.1, {(63, 32): 0.9}, False),  # row 70: the window is empty
    ],
)
def test_heatmap_window_edges_follow_mediapipe(
    x: float, y: float, cells: dict[tuple[int, int], float], moved: bool
) -> None:
    refined = refine_with_heatmap(landmark_at(x, y), heatmap_with_blob(cells))
    assert (tuple(refined[0, 0, 0:2]) != (x, y)) is moved


def test_one_euro_passes_the_first_sample_and_holds_a_constant() -> None:
    one_euro = OneEuroFilter(POSE_LANDMARK_FILTER)
    values = np.array([[100.0, 200.0, -5.0]])
    for step in range(5):
        np.testing.assert_allclose(one_euro.apply(values, step / 30, 50.0), values)


def test_one_euro_static_smoothing_factor_at_30_hz() -> None:
    one_euro = OneEuroFilter(POSE_LANDMARK_FILTER)
    one_euro.apply(np.array([0.0]), 0.0, 1e9)  # a huge object: the speed term vanishes
    moved = one_euro.apply(np.array([1.0]), 1 / 30, 1e9)
    assert moved[0] == pytest.approx(1 / (1 + 30 / (2 * math.pi * 0.05)), rel=1e-4)  # ≈ 0.0104


class ScalarOneEuro:
    """MediaPipe's OneEuroFilter for one value, written from its description (blazepose.md §8d)."""

    def __init__(self, min_cutoff: float, beta: float, derivative_cutoff: float) -> None:
        self.frequency = 30.0
        self.parameters = (min_cutoff, beta, derivative_cutoff)
        self.last_time: float | None = None
        self.last_raw: float | None = None
        self.value = 0.0
        self.speed = 0.0

    def alpha(self, cutoff: float) -> float:
        return 1.0 / (1.0 + (1.0 / (2 * math.pi * cutoff)) / (1.0 / self.frequency))

    def apply(self, time_s: float, scale: float, value: float) -> float:
        if self.last_time is not None and time_s <= self.last_time:
            return value
        if self.last_time is not None:
            self.frequency = 1.0 / (time_s - self.last_time)
        self.last_time = time_s
        min_cutoff, beta, derivative_cutoff = self.parameters
        if self.last_raw is None:
            self.speed, self.value = 0.0, value
        else:
            speed = (value - self.last_raw) * scale * self.frequency
            alpha = self.alpha(derivative_cutoff)
            self.speed = alpha * speed + (1 - alpha) * self.speed
            alpha = self.alpha(min_cutoff + beta * abs(self.speed))
            self.value = alpha * value + (1 - alpha) * self.value
        self.last_raw = value
        return self.value


def test_one_euro_matches_the_scalar_definition_with_gaps_and_repeats() -> None:
    rng = np.random.default_rng(6)
    vectorised = OneEuroFilter(AUXILIARY_LANDMARK_FILTER)
    parameters = AUXILIARY_LANDMARK_FILTER
    scalars = [
        ScalarOneEuro(parameters.min_cutoff_hz, parameters.beta, parameters.derivative_cutoff_hz)
        for _ in range(4)
    ]
    time_s = 0.0
    values = np.array([300.0, 200.0, 5.0, 0.0])
    for step in range(60):
        time_s += [1 / 30, 2 / 30, 0.0, 1 / 24][step % 4]  # regular, a gap, a repeat, 24 Hz
        values = values + rng.normal(0.0, 4.0, size=4)
        scale = float(rng.uniform(80, 400))
        expected = [f.apply(time_s, 1 / scale, v) for f, v in zip(scalars, values, strict=True)]
        np.testing.assert_allclose(vectorised.apply(values, time_s, scale), expected, rtol=1e-12)


def test_one_euro_reset_and_tiny_objects_pass_values_through() -> None:
    one_euro = OneEuroFilter(POSE_LANDMARK_FILTER)
    one_euro.apply(np.array([0.0]), 0.0, 100.0)
    assert one_euro.apply(np.array([50.0]), 1.0, 1e-9)[0] == 50.0  # object too small to filter
    one_euro.reset()
    assert one_euro.apply(np.array([70.0]), 1.1, 100.0)[0] == 70.0


def test_visibility_is_low_passed() -> None:
    visibility = VisibilityFilter()
    assert visibility.apply(np.array([1.0]))[0] == 1.0
    assert visibility.apply(np.array([0.0]))[0] == pytest.approx(0.9)
    assert visibility.apply(np.array([0.0]))[0] == pytest.approx(0.81)


def reference_fixed_point_warp(
    image: NDArray[np.uint8], matrix: NDArray[np.float64], size: int
) -> NDArray[np.uint8]:
    """OpenCV 4's uint8 bilinear warp, written out: 1/32-pixel coordinates, 15-bit weights,
    replicated border. Independent of cv2.remap."""
    steps = np.arange(size, dtype=np.float64)
    columns, rows = np.meshgrid(steps, steps)
    source_x = matrix[0, 0] * columns + matrix[0, 1] * rows + matrix[0, 2]
    source_y = matrix[1, 0] * columns + matrix[1, 1] * rows + matrix[1, 2]
    fixed_x = np.rint(source_x * 32).astype(int)
    fixed_y = np.rint(source_y * 32).astype(int)
    x0, y0 = fixed_x >> 5, fixed_y >> 5
    weight_x, weight_y = fixed_x & 31, fixed_y & 31
    height, width = image.shape[:2]
    total = np.zeros((size, size, 3), dtype=np.int64)
    for step_y, factor_y in ((0, 32 - weight_y), (1, weight_y)):
        for step_x, factor_x in ((0, 32 - weight_x), (1, weight_x)):
            ys = np.clip(y0 + step_y, 0, height - 1)
            xs = np.clip(x0 + step_x, 0, width - 1)
            total += image[ys, xs].astype(np.int64) * (factor_x * factor_y * 32)[..., None]
    blended: NDArray[np.uint8] = np.clip((total + (1 << 14)) >> 15, 0, 255).astype(np.uint8)
    return blended


def test_fixed_point_warp_matches_opencv_4_rounding() -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(180, 240, 3), dtype=np.uint8)
    warper = FixedPointWarper(64, 64)
    for _ in range(5):
        roi = RegionOfInterest(*rng.uniform([20, 20, 40, -3.2], [220, 160, 300, 3.2]))
        matrix = crop_matrix(roi)
        matrix[:, :2] *= 4.0  # a 64-pixel crop of the same square
        destination = np.zeros((64, 64, 3), dtype=np.uint8)
        warper.warp(image, matrix, destination, border_mode=cv2.BORDER_REPLICATE)
        np.testing.assert_array_equal(destination, reference_fixed_point_warp(image, matrix, 64))
