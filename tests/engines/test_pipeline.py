"""The BlazePose engine's per-camera behaviour, driven by a hand-written fake model runner."""

from __future__ import annotations

import math
import threading
from dataclasses import astuple

import numpy as np
import pytest
from numpy.typing import NDArray

from engines import CameraFrame, Pose
from engines.blazepose import (
    BlazePoseEngine,
    DetectorOutputs,
    LandmarkOutputs,
    PipelineSettings,
    TrackerState,
)
from tests.engines.fixtures_pipeline import FakeRunner

WIDTH, HEIGHT = 1280, 720


def frame(
    camera_id: str, index: int = 0, *, value: int = 128, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> CameraFrame:
    width, height = size
    image = np.full((height, width, 3), value, dtype=np.uint8)
    return CameraFrame(camera_id=camera_id, index=index, time_s=index / 30.0, image_rgb=image)


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


def test_a_degenerate_detection_is_no_person() -> None:
    runner = FakeRunner(scale_point=(0.5, 0.5))  # on the hip: a crop of no size
    engine = BlazePoseEngine(runner)
    assert engine.infer([frame("a", 0)]) == [None]
    assert runner.landmark_batches == []
    assert engine.tracker_state("a") is TrackerState.SEARCHING
