"""``score`` and ``evaluate``: the re-judging path runs the live scorer over a keypoint track."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.tracks import PoseTrack, load_npz
from server.evaluation import (
    add_evaluate_arguments,
    add_score_arguments,
    evaluate_command,
    evaluate_manifest,
    load_track,
    match_rep_times,
    score_command,
    score_report_json,
    score_track,
)
from server.scoring import Exercise, ScoringError
from tests.scoring.bodies import TOP, PushUpPose, hold, push_up_reps, render_push_up
from tests.scoring.kinematics import Frame, frames
from tests.scoring.runs import SHIPPED_RULES


def push_up_frames(count: int, depth_deg: float = 60.0) -> list[Frame]:
    return frames(TOP, [hold(0.5), *push_up_reps(count, depth_deg=depth_deg)], render_push_up)


def as_track(frames_: list[Frame]) -> PoseTrack:
    keypoints = np.full((len(frames_), 33, 5), np.nan, dtype=np.float32)
    for row, frame in enumerate(frames_):
        if frame.keypoints is not None:
            keypoints[row] = frame.keypoints
    return PoseTrack(
        frame_index=np.asarray([frame.index for frame in frames_], dtype=np.int64),
        time_s=np.asarray([frame.time_s for frame in frames_], dtype=np.float64),
        keypoints=keypoints,
    )


def write_reference(path: Path, frames_: list[Frame]) -> None:
    document = {
        "video": path.name,
        "width": 1280,
        "height": 720,
        "fps": 20.0,
        "frames": [
            {
                "i": frame.index,
                "t": frame.time_s,
                "landmarks": None if frame.keypoints is None else frame.keypoints.tolist(),
            }
            for frame in frames_
        ],
    }
    path.write_text(json.dumps(document), encoding="utf-8")


def test_score_track_summarises_counts_fouls_and_evidence() -> None:
    mixed = frames(
        TOP,
        [hold(0.5), *push_up_reps(2), *push_up_reps(1, depth_deg=110.0)],
        render_push_up,
    )
    report = score_track(as_track(mixed), Exercise.PUSH_UP, 5, SHIPPED_RULES)
    assert report.rep_count == 2
    assert report.fouls == {"NOT_LOW_ENOUGH": 1}
    assert report.end_reason == "completed"
    document = score_report_json(report)
    assert document["rep_count"] == 2
    assert document["fouls"] == {"NOT_LOW_ENOUGH": 1}
    assert document["violation"] is None
    assert document["frames"] == len(mixed)
    first = document["reps"][0]
    assert {"index", "start_s", "bottom_s", "end_s", "min_elbow_angle_deg"} <= set(first)
    assert first["index"] == 1
    assert first["start_s"] < first["bottom_s"] < first["end_s"]
    assert document["fouled_reps"][0]["code"] == "NOT_LOW_ENOUGH"
    json.dumps(document, allow_nan=False)


def test_score_track_reports_a_violation_and_frames_without_a_person() -> None:
    away = PushUpPose(present=False)
    gone = frames(
        TOP, [hold(0.5), *push_up_reps(1), hold(0.1, away), hold(4.0, away)], render_push_up
    )
    report = score_track(as_track(gone), Exercise.PUSH_UP, 5, SHIPPED_RULES)
    assert report.end_reason == "violation"
    assert report.violation is not None
    assert report.violation.code.name == "LEFT_POSITION"
    assert report.frames_with_person < report.frames
    assert score_report_json(report)["violation"] == "LEFT_POSITION"


MATCHES = [
    pytest.param([1.0, 2.0, 3.0], [1.1, 2.2, 2.9], 3, id="all-close"),
    pytest.param([1.0, 2.0], [1.0, 2.0, 3.0], 2, id="missed-one"),
    pytest.param([1.0, 1.2, 2.0], [1.1, 2.0], 2, id="extra-one"),
    pytest.param([1.0, 2.6], [1.0, 2.0], 1, id="too-far"),
    pytest.param([0.6, 1.0], [0.5, 1.0], 2, id="greedy-needs-order"),
    pytest.param([], [1.0], 0, id="none-predicted"),
]


@pytest.mark.parametrize(("predicted", "labelled", "matched"), MATCHES)
def test_rep_times_match_one_to_one_within_the_tolerance(
    predicted: list[float], labelled: list[float], matched: int
) -> None:
    pairs = match_rep_times(predicted, labelled, 0.5)
    assert len(pairs) == matched
    assert len({got for got, _ in pairs}) == len(pairs)
    assert all(abs(got - want) <= 0.5 for got, want in pairs)


@pytest.fixture
def labelled_clips(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    reference = tmp_path / "reference"
    media.mkdir()
    reference.mkdir()
    write_reference(reference / "three.mediapipe.json", push_up_frames(3))
    write_reference(reference / "two.mediapipe.json", push_up_frames(2))
    manifest: list[dict[str, Any]] = [
        {
            "file": "three.mp4",
            "exercise": "push-up",
            "full_reps": 3,
            "rep_times_s": [1.1, 2.9, 4.7],
        },
        {"file": "two.mp4", "exercise": "push-up", "full_reps": 3, "rep_times_s": [1.1, 2.9, 9.0]},
    ]
    path = media / "manifest.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path


def test_reference_json_round_trips(tmp_path: Path) -> None:
    original = push_up_frames(1)
    write_reference(tmp_path / "clip.mediapipe.json", original)
    track = load_track(tmp_path / "clip.mediapipe.json")
    assert track.keypoints.shape == (len(original), 33, 5)
    assert track.time_s[-1] == pytest.approx(original[-1].time_s)


def test_evaluate_manifest_measures_counts_and_rep_times(labelled_clips: Path) -> None:
    report = evaluate_manifest(labelled_clips, "reference", rules=SHIPPED_RULES)
    three, two = report.clips
    assert (three.rep_count, two.rep_count) == (3, 2)
    assert report.exact_accuracy == 0.5
    assert report.off_by_one_accuracy == 1.0
    assert report.mae_reps == 0.5
    assert report.mae_normalized == pytest.approx(1 / 6)
    assert report.rep_precision == 1.0
    assert report.rep_recall == pytest.approx(5 / 6)
    assert all(abs(error) <= 0.5 for error in three.matched_errors_s)


def _parser(add: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser


def test_score_command_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clip.mediapipe.json"
    write_reference(path, push_up_frames(2))
    args = _parser(add_score_arguments).parse_args(
        [str(path), "--exercise", "push-up", "--level", "5", "--json"]
    )
    assert score_command(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["rep_count"] == 2
    assert [rep["index"] for rep in document["reps"]] == [1, 2]


def test_score_command_text_and_bad_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clip.mediapipe.json"
    write_reference(path, push_up_frames(1))
    parser = _parser(add_score_arguments)
    assert score_command(parser.parse_args([str(path), "--exercise", "push-up"])) == 0
    assert "1 reps" in capsys.readouterr().out
    assert (
        score_command(parser.parse_args([str(path), "--exercise", "push-up", "--level", "9"])) == 2
    )
    assert "level" in capsys.readouterr().err


def test_score_command_rejects_bad_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clip.mediapipe.json"
    write_reference(path, push_up_frames(1))
    rules = tmp_path / "rules.toml"
    rules.write_text('version = "x"\n', encoding="utf-8")
    args = _parser(add_score_arguments).parse_args(
        [str(path), "--exercise", "push-up", "--rules", str(rules)]
    )
    assert score_command(args) == 2
    assert "pushup" in capsys.readouterr().err


def test_evaluate_command_prints_the_summary(
    labelled_clips: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = _parser(add_evaluate_arguments)
    assert evaluate_command(parser.parse_args([str(labelled_clips)])) == 0
    text = capsys.readouterr().out
    assert "exact 50%" in text
    assert evaluate_command(parser.parse_args([str(labelled_clips), "--json"])) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["exact_accuracy"] == 0.5
    assert document["per_clip"][1]["rep_count"] == 2


def test_the_engine_source_fails_clearly_without_models(
    labelled_clips: Path, tmp_path: Path
) -> None:
    with pytest.raises(ScoringError, match="pose engine"):
        evaluate_manifest(
            labelled_clips, "engine", rules=SHIPPED_RULES, model_dir=tmp_path / "none"
        )


def test_score_saves_the_judged_track_and_rejudges_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "clip.mediapipe.json"
    write_reference(reference, push_up_frames(2))
    saved = tmp_path / "clip.pose.npz"
    parser = _parser(add_score_arguments)
    arguments = [str(reference), "--exercise", "push-up", "--json", "--pose-out", str(saved)]
    assert score_command(parser.parse_args(arguments)) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(load_npz(saved)) == first["frames"]
    assert score_command(parser.parse_args([str(saved), "--exercise", "push-up", "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["reps"] == first["reps"]


def test_score_without_models_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    arguments = [str(video), "--exercise", "sit-up", "--model-dir", str(tmp_path / "none")]
    assert score_command(_parser(add_score_arguments).parse_args(arguments)) == 2
    assert "pose engine" in capsys.readouterr().err
