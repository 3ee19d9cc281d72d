"""The BlazePose pipeline's pure parts and its per-camera behaviour, with a fake model runner."""

from __future__ import annotations

import math
import threading
from dataclasses import astuple

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from engines import CameraFrame, Pose, RegionOfInterest
from engines.blazepose import (
    BlazePoseEngine,
    DetectorOutputs,
    LandmarkOutputs,
    PipelineSettings,
    TrackerState,
)
from engines.detection import (
    Letterbox,
    best_detection,
    intersection_over_union,
    roi_from_alignment_points,
    ssd_anchor_centers,
    wrap_radians,
)
from engines.landmarks import crop_matrix, decode_landmarks, project_to_frame, roi_arrays
from engines.warping import FixedPointWarper
from tests.engines.fixtures_pipeline import FakeRunner

WIDTH, HEIGHT = 1280, 720


def frame(
    camera_id: str, index: int = 0, *, value: int = 128, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> CameraFrame:
    width, height = size
    image = np.full((height, width, 3), value, dtype=np.uint8)
    return CameraFrame(camera_id=camera_id, index=index, time_s=index / 30.0, image_rgb=image)


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


# --- the engine, with a fake runner ---------------------------------------------------------


def test_a_batch_costs_one_detector_call_and_one_landmark_call() -> None:
    runner = FakeRunner()
    engine = BlazePoseEngine(runner)
    cameras = ["a", "b", "c"]
    first = engine.infer([frame(camera, 0) for camera in cameras])
    assert all(isinstance(pose, Pose) for pose in first)
    assert (runner.detector_batches, runner.landmark_batches) == ([3], [3])

    engine.infer([frame(camera, 1) for camera in cameras])  # all tracking
    assert (runner.detector_batches, runner.landmark_batches) == ([3], [3, 3])

    engine.forget("b")
    assert engine.tracker_state("b") is TrackerState.SEARCHING
    engine.infer([frame(camera, 2) for camera in cameras])
    assert (runner.detector_batches, runner.landmark_batches) == ([3, 1], [3, 3, 3])


def test_a_camera_twice_in_one_batch_is_refused_by_name() -> None:
    runner = FakeRunner()
    with pytest.raises(ValueError, match="'front-door'"):
        BlazePoseEngine(runner).infer([frame("front-door", 0), frame("x"), frame("front-door", 1)])
    assert runner.detector_batches == runner.landmark_batches == []


def test_batches_beyond_max_batch_and_bad_images_are_refused() -> None:
    engine = BlazePoseEngine(FakeRunner(max_batch_size=2))
    with pytest.raises(ValueError, match="max_batch 2"):
        engine.infer([frame("a"), frame("b"), frame("c")])
    gray = CameraFrame("a", 0, 0.0, np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        engine.infer([gray])
    assert engine.infer([]) == []


def test_first_pose_comes_from_the_detection_and_the_next_roi_from_the_landmarks() -> None:
    # Hip at the input centre, scale point 0.2 × 1280 px above it.
    runner = FakeRunner(auxiliary=((128.0, 128.0), (128.0, 64.0)))
    engine = BlazePoseEngine(runner)
    (pose,) = engine.infer([frame("a", 0)])
    assert pose is not None
    assert astuple(pose.roi) == pytest.approx((640.0, 360.0, 640.0, 0.0), abs=1e-3)
    assert pose.keypoints.shape == (33, 5)
    assert pose.keypoints.dtype == np.float32
    assert pose.score == pytest.approx(0.9)
    np.testing.assert_allclose(pose.keypoints[:, 3], 1 / (1 + math.exp(-2.0)), rtol=1e-6)
    np.testing.assert_allclose(pose.keypoints[:, 4], 1 / (1 + math.exp(-3.0)), rtol=1e-6)
    expected_x = 640.0 + (np.linspace(64.0, 192.0, 39)[:33] / 256.0 - 0.5) * 640.0
    np.testing.assert_allclose(pose.keypoints[:, 0], expected_x, rtol=1e-6)
    assert engine.tracker_state("a") is TrackerState.TRACKING

    # The auxiliary landmarks, at the crop centre and 64 crop pixels (= 160 px) above it, pass the
    # filter unchanged on a first frame and place the next crop.
    (second,) = engine.infer([frame("a", 1)])
    assert second is not None
    assert astuple(second.roi) == pytest.approx((640.0, 360.0, 400.0, 0.0), abs=1e-3)
    assert runner.detector_batches == [1]


def test_model_inputs_are_normalised_as_mediapipe_does() -> None:
    runner = FakeRunner()
    engine = BlazePoseEngine(runner)
    captured: list[NDArray[np.float32]] = []
    detect = runner.detect

    def spy(images: NDArray[np.float32]) -> DetectorOutputs:
        captured.append(images.copy())
        return detect(images)

    runner.detect = spy  # type: ignore[method-assign]
    engine.infer([frame("a", value=255)])
    letterboxed = captured[0][0]
    np.testing.assert_allclose(letterboxed[0], -1.0)  # black padding above the 16:9 frame
    np.testing.assert_allclose(letterboxed[112], 1.0, rtol=1e-6)  # the white frame
    np.testing.assert_allclose(runner.crops[0], 1.0, rtol=1e-6)  # replicated border, [0, 1]


@pytest.mark.parametrize("flag", [0.2, 0.5])
def test_a_pose_needs_a_flag_above_the_threshold(flag: float) -> None:
    runner = FakeRunner(flags=[0.9, flag, 0.9])
    engine = BlazePoseEngine(runner)
    assert engine.infer([frame("a", 0)])[0] is not None
    assert engine.infer([frame("a", 1)]) == [None]
    assert engine.tracker_state("a") is TrackerState.SEARCHING
    assert engine.infer([frame("a", 2)])[0] is not None
    assert runner.detector_batches == [1, 1]  # re-detected on the frame after the loss


def test_no_detection_means_no_pose_and_no_landmark_call() -> None:
    runner = FakeRunner(detected=False)
    engine = BlazePoseEngine(runner)
    assert engine.infer([frame("a", 0), frame("b", 0)]) == [None, None]
    assert runner.landmark_batches == []
    assert engine.tracker_state("a") is TrackerState.SEARCHING


def test_a_new_frame_size_restarts_tracking() -> None:
    runner = FakeRunner()
    engine = BlazePoseEngine(runner)
    engine.infer([frame("a", 0)])
    engine.infer([frame("a", 1, size=(640, 480))])
    assert runner.detector_batches == [1, 1]


def test_smoothing_can_be_switched_off() -> None:
    engine = BlazePoseEngine(FakeRunner(), PipelineSettings(smooth_landmarks=False))
    poses = [engine.infer([frame("a", index)])[0] for index in range(3)]
    assert all(pose is not None for pose in poses)
    # Same raw landmarks, same ROI from the second frame on: unsmoothed output is identical.
    assert poses[1] is not None
    assert poses[2] is not None
    np.testing.assert_array_equal(poses[1].keypoints[:, :3], poses[2].keypoints[:, :3])


class BlockingRunner(FakeRunner):
    """Holds the landmark call until released, to overlap two infer calls."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def landmarks(self, crops: NDArray[np.float32]) -> LandmarkOutputs:
        self.entered.set()
        assert self.release.wait(timeout=10.0)
        return super().landmarks(crops)


def test_a_camera_cannot_be_inferred_on_two_threads_at_once() -> None:
    runner = BlockingRunner()
    engine = BlazePoseEngine(runner)
    worker = threading.Thread(target=engine.infer, args=([frame("a", 0)],))
    worker.start()
    try:
        assert runner.entered.wait(timeout=10.0)
        with pytest.raises(ValueError, match="'a' is already being inferred"):
            engine.infer([frame("a", 1)])
    finally:
        runner.release.set()
        worker.join(timeout=10.0)
    assert engine.infer([frame("a", 2)])[0] is not None  # released afterwards


def test_engine_reports_its_runner() -> None:
    engine = BlazePoseEngine(FakeRunner(max_batch_size=4))
    assert (engine.name, engine.max_batch, engine.preferred_batch) == ("blazepose-full/fake", 4, 1)
    engine.forget("never-seen")
    engine.close()
