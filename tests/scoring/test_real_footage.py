"""Real footage: MediaPipe's reference keypoints of the hand-counted clips in shared/media.

Each clip must give exactly its hand count at the default level (5), with every counted rep's far
end within 0.5 s of a labelled rep time. The clips live outside the repository (../shared); the
tests skip with a reason where it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.tracks import PoseTrack, load_reference_json
from server.evaluation import evaluate_manifest, match_rep_times, score_track
from server.scoring import LEVELS, Exercise
from tests.scoring.runs import SHIPPED_RULES

SHARED = Path(__file__).resolve().parents[3] / "shared"
MANIFEST = SHARED / "media" / "manifest.json"
REFERENCE = SHARED / "reference"

needs_footage = pytest.mark.skipif(
    not MANIFEST.is_file() or not REFERENCE.is_dir(),
    reason=f"real footage not found at {SHARED} (shared/media and shared/reference)",
)


def _clips() -> list[dict[str, Any]]:
    if not MANIFEST.is_file():
        return []
    entries: list[dict[str, Any]] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return entries


def _track(clip: dict[str, Any]) -> PoseTrack:
    return load_reference_json(REFERENCE / (Path(clip["file"]).stem + ".mediapipe.json"))


CLIPS = [pytest.param(clip, id=Path(clip["file"]).stem) for clip in _clips()] or [
    pytest.param({}, id="no-footage")
]


@needs_footage
@pytest.mark.parametrize("clip", CLIPS)
def test_each_clip_counts_its_hand_count_at_the_right_times(clip: dict[str, Any]) -> None:
    report = score_track(_track(clip), Exercise(clip["exercise"]), 5, SHIPPED_RULES)
    predicted = [rep.evidence.bottom_time_s for rep in report.reps]
    assert report.rep_count == clip["full_reps"], predicted
    assert report.fouls == {}
    assert report.violation is None
    labelled = clip["rep_times_s"]
    assert len(match_rep_times(predicted, labelled, 0.5)) == len(labelled), (predicted, labelled)


@needs_footage
@pytest.mark.parametrize("clip", CLIPS)
def test_each_clip_counts_the_same_at_every_level(clip: dict[str, Any]) -> None:
    track = _track(clip)
    counts = [
        score_track(track, Exercise(clip["exercise"]), level, SHIPPED_RULES).rep_count
        for level in LEVELS
    ]
    assert counts == [clip["full_reps"]] * len(LEVELS)


@needs_footage
@pytest.mark.parametrize("clip", CLIPS)
def test_each_clip_still_counts_at_half_the_frame_rate(clip: dict[str, Any]) -> None:
    """A live camera at 20 fps, or an engine that skips frames, sees fewer frames than the file."""
    track = _track(clip)
    every_other = PoseTrack(track.frame_index[::2], track.time_s[::2], track.keypoints[::2])
    report = score_track(every_other, Exercise(clip["exercise"]), 5, SHIPPED_RULES)
    assert report.rep_count == clip["full_reps"]


@needs_footage
@pytest.mark.parametrize("clip", CLIPS)
def test_each_clip_survives_a_pixel_of_extra_jitter(clip: dict[str, Any]) -> None:
    track = _track(clip)
    noise = np.random.default_rng(5).uniform(-1.0, 1.0, track.keypoints[..., :2].shape)
    keypoints = track.keypoints.copy()
    keypoints[..., :2] += noise.astype(np.float32)
    jittered = PoseTrack(track.frame_index, track.time_s, keypoints)
    report = score_track(jittered, Exercise(clip["exercise"]), 5, SHIPPED_RULES)
    assert report.rep_count == clip["full_reps"]


@needs_footage
def test_evaluate_reports_perfect_accuracy_on_the_reference_keypoints() -> None:
    report = evaluate_manifest(MANIFEST, "reference", rules=SHIPPED_RULES)
    assert len(report.clips) == len(_clips())
    assert report.exact_accuracy == 1.0
    assert report.mae_reps == 0.0
    assert report.rep_precision == 1.0
    assert report.rep_recall == 1.0
