"""The pipeline on ONNX Runtime against MediaPipe 0.10.14's own landmarks on the shared clips.

The references (shared/reference/*.mediapipe.json) were made by ``mp.solutions.pose`` with
model_complexity=1 in tracking mode. Thresholds are on the 12 body joints, in pixels. The shared
footage is not in the repository; these tests skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from engines import CameraFrame
from engines.blazepose import BlazePoseEngine
from engines.models import ModelFiles
from engines.onnx_runtime import OnnxRuntimeRunner
from engines.tracks import PoseTrack, load_reference_json, track_video
from tests.engines.fixtures_pipeline import (
    BODY_JOINTS,
    CLIPS,
    landmark_model_with_heatmap,
    shared_clip,
)

MEDIAPIPE_CLOCK_HZ = 30.0
"""MediaPipe's Python API stamps frame k at k × 33 333 µs whatever the video's frame rate."""


@pytest.fixture(scope="module")
def engine(model_files: ModelFiles, tmp_path_factory: pytest.TempPathFactory) -> BlazePoseEngine:
    landmark = landmark_model_with_heatmap(model_files, tmp_path_factory.mktemp("models"))
    return BlazePoseEngine(OnnxRuntimeRunner(model_files.detector_onnx, landmark))


def joint_errors_px(ours: PoseTrack, reference: PoseTrack) -> NDArray[np.float64]:
    """Distances of the body joints on frames where both found a person."""
    assert len(ours) == len(reference)
    both = ours.present & reference.present
    joints = list(BODY_JOINTS)
    delta = ours.keypoints[both][:, joints, 0:2] - reference.keypoints[both][:, joints, 0:2]
    return np.asarray(np.hypot(delta[..., 0], delta[..., 1]), dtype=np.float64).ravel()


def summary(errors: NDArray[np.float64]) -> str:
    return f"median {np.median(errors):.2f} px, p95 {np.percentile(errors, 95):.2f} px"


def first_frame(video: Path) -> NDArray[np.uint8]:
    with av.open(str(video)) as container:
        for decoded in container.decode(video=0):
            return np.ascontiguousarray(decoded.to_ndarray(format="rgb24"), dtype=np.uint8)
    raise AssertionError(f"{video} has no frames")


@pytest.mark.parametrize("clip", CLIPS)
def test_first_frame_matches_mediapipe_to_its_rounding(clip: str, engine: BlazePoseEngine) -> None:
    """Detector, NMS, ROI, crop, landmarks, heatmap refinement and projection, without tracking:
    the reference stores 0.01 px, so anything but a tiny difference is a real deviation."""
    video, reference_path = shared_clip(clip)
    reference = load_reference_json(reference_path)
    engine.forget("first-frame")
    (pose,) = engine.infer([CameraFrame("first-frame", 0, 0.0, first_frame(video))])
    engine.forget("first-frame")
    if not reference.present[0]:
        assert pose is None
        return
    assert pose is not None
    delta = pose.keypoints[:, 0:2] - reference.keypoints[0, :, 0:2]
    errors = np.hypot(delta[:, 0], delta[:, 1])
    assert np.median(errors) <= 0.05, f"{clip}: {errors.round(2)}"
    assert errors.max() <= 0.5, f"{clip}: {errors.round(2)}"


@pytest.mark.slow
@pytest.mark.parametrize("clock_hz", [MEDIAPIPE_CLOCK_HZ, None], ids=["mediapipe-clock", "pts"])
def test_pushup_side_clip_tracks_like_mediapipe_through_both_cuts(
    engine: BlazePoseEngine, clock_hz: float | None
) -> None:
    """The issue's bar: a person on ≥ 99 % of frames, body joints within 2 px median and 8 px p95
    at 1280×720, through the two hard cuts (~3.5 s and ~10.5 s). Checked with MediaPipe's own
    clock and with the video's timestamps (what the server uses)."""
    video, reference_path = shared_clip("pushup_side_gg")
    ours = track_video(video, engine, clock_hz=clock_hz)
    reference = load_reference_json(reference_path)
    errors = joint_errors_px(ours, reference)
    assert ours.present.mean() >= 0.99
    assert np.median(errors) <= 2.0, summary(errors)
    assert np.percentile(errors, 95) <= 8.0, summary(errors)


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["pushup_45deg_da", "situp_side_jl", "pullup_rear_da"])
def test_other_clips_track_like_mediapipe(engine: BlazePoseEngine, clip: str) -> None:
    """Same bar where it holds. pushup_front_da is left out: there two runtimes of the *same*
    pipeline (ONNX Runtime, LiteRT) already differ by ~3 px median, so MediaPipe is only one
    sample of how that clip's tracking wanders."""
    video, reference_path = shared_clip(clip)
    ours = track_video(video, engine, clock_hz=MEDIAPIPE_CLOCK_HZ)
    reference = load_reference_json(reference_path)
    errors = joint_errors_px(ours, reference)
    assert (ours.present == reference.present).mean() >= 0.99
    assert np.median(errors) <= 2.0, summary(errors)
    assert np.percentile(errors, 95) <= 8.0, summary(errors)
