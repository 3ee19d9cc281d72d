"""Pose tracks: a video run through an engine, the .npz round trip, MediaPipe's reference JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engines import CameraFrame, Pose, RegionOfInterest
from engines.tracks import PoseTrack, load_npz, load_reference_json, save_npz, track_video
from tests.engines.fixtures_pipeline import shared_clip, write_video


class RecordingEngine:
    """A PoseEngine that finds a person on even frames only and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[list[CameraFrame]] = []
        self.forgotten: list[str] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def preferred_batch(self) -> int:
        return 1

    @property
    def max_batch(self) -> int:
        return 1

    def infer(self, frames: Sequence[CameraFrame]) -> list[Pose | None]:
        self.calls.append(list(frames))
        results: list[Pose | None] = []
        for frame in frames:
            if frame.index % 2:
                results.append(None)
                continue
            keypoints = np.full((33, 5), float(frame.index), dtype=np.float32)
            results.append(Pose(keypoints, 0.9, RegionOfInterest(0.0, 0.0, 1.0, 0.0)))
        return results

    def forget(self, camera_id: str) -> None:
        self.forgotten.append(camera_id)

    def close(self) -> None:
        """Nothing to release."""


def sample_track() -> PoseTrack:
    keypoints = np.random.default_rng(8).random((4, 33, 5)).astype(np.float32)
    keypoints[2] = np.nan
    return PoseTrack(
        frame_index=np.arange(4, dtype=np.int64),
        time_s=np.arange(4, dtype=np.float64) / 24.0,
        keypoints=keypoints,
    )


def test_track_video_runs_every_frame_in_order_one_per_call(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, 6)
    engine = RecordingEngine()
    track = track_video(video, engine, camera_id="cam-7")
    assert [len(call) for call in engine.calls] == [1] * 6
    frames = [call[0] for call in engine.calls]
    assert [frame.camera_id for frame in frames] == ["cam-7"] * 6
    assert frames[0].image_rgb.shape == (48, 64, 3)
    assert engine.forgotten == ["cam-7", "cam-7"]  # fresh tracking, and nothing left behind
    np.testing.assert_array_equal(track.frame_index, np.arange(6))
    np.testing.assert_allclose(track.time_s, np.arange(6) / 25.0)
    np.testing.assert_array_equal(track.present, [True, False] * 3)
    assert np.isnan(track.keypoints[1]).all()
    np.testing.assert_array_equal(track.keypoints[4], 4.0)


def test_track_video_can_use_mediapipes_clock(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, 3)
    track = track_video(video, RecordingEngine(), clock_hz=30.0)
    np.testing.assert_allclose(track.time_s, [0.0, 1 / 30, 2 / 30])


def test_npz_round_trip_keeps_exactly_the_three_arrays(tmp_path: Path) -> None:
    track = sample_track()
    path = tmp_path / "pose"  # no suffix: written where asked, not to pose.npz
    save_npz(track, path)
    assert path.is_file()
    with np.load(path) as archive:
        assert sorted(archive.files) == ["frame_index", "keypoints", "time_s"]
    loaded = load_npz(path)
    np.testing.assert_array_equal(loaded.frame_index, track.frame_index)
    np.testing.assert_array_equal(loaded.time_s, track.time_s)
    np.testing.assert_array_equal(loaded.keypoints, track.keypoints)  # NaN rows included
    assert loaded.keypoints.dtype == np.float32
    np.testing.assert_array_equal(loaded.present, [True, True, False, True])


def test_npz_without_the_arrays_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, frame_index=np.arange(2))
    with pytest.raises(ValueError, match="not a pose track"):
        load_npz(path)


def test_track_arrays_are_checked() -> None:
    track = sample_track()
    with pytest.raises(ValueError, match="keypoints"):
        PoseTrack(track.frame_index, track.time_s, track.keypoints.astype(np.float64))
    with pytest.raises(ValueError, match="frame_index"):
        PoseTrack(track.frame_index[:3], track.time_s, track.keypoints)


def test_reference_json_becomes_a_track_with_z_in_pixels(tmp_path: Path) -> None:
    landmarks = [[10.0, 20.0, -0.5, 0.9, 0.0]] * 33
    document = {
        "video": "x.mp4",
        "width": 640,
        "height": 480,
        "fps": 25.0,
        "model": "mediapipe",
        "frames": [
            {"i": 0, "t": 0.0, "landmarks": landmarks},
            {"i": 1, "t": 0.04, "landmarks": None},
        ],
    }
    path = tmp_path / "x.mediapipe.json"
    path.write_text(json.dumps(document))
    track = load_reference_json(path)
    np.testing.assert_array_equal(track.frame_index, [0, 1])
    np.testing.assert_allclose(track.time_s, [0.0, 0.04])
    np.testing.assert_allclose(track.keypoints[0, 0], [10.0, 20.0, -320.0, 0.9, 0.0])
    np.testing.assert_array_equal(track.present, [True, False])


def test_shared_reference_loads() -> None:
    _, reference = shared_clip("pushup_side_gg")
    track = load_reference_json(reference)
    assert len(track) == 325
    assert track.present.all()
    assert track.keypoints[:, :, 0].max() <= 1280.0
