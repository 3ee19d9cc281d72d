"""Re-judging and measuring: ``fitscore-server score`` and ``fitscore-server evaluate``.

Both run the same scorers as a live assessment (:func:`server.scoring.create_scorer`), fed the
frames of a keypoint track (:class:`engines.tracks.PoseTrack`): the server's own engine run over a
video, a track saved as ``.npz`` (an assessment's ``<video>.pose.npz``), or MediaPipe's reference
landmarks (``shared/reference/<clip>.mediapipe.json``). ``score_track`` is pure;
``evaluate_manifest`` reads a manifest of hand-counted clips (shared/media/manifest.json's format)
and reports exact-count accuracy, off-by-one accuracy, MAE and per-repetition precision/recall
against the labelled repetition times (domain.md §10).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from engines import EngineError, load_engine
from engines.models import DEFAULT_MODEL_DIR
from engines.tracks import PoseTrack, load_npz, load_reference_json, save_npz, track_video
from server.scoring import (
    DEFAULT_LEVEL,
    Exercise,
    Foul,
    RepCounted,
    RepEvidence,
    Rules,
    ScoringError,
    ScoringEvent,
    ScoringWarning,
    Violation,
    create_scorer,
    load_rules,
)

REP_TIME_TOLERANCE_S = 0.5
REFERENCE_SUFFIX = ".mediapipe.json"


class KeypointTrack(Protocol):
    """Per-frame landmarks of one video (engines.tracks.PoseTrack has this shape)."""

    @property
    def frame_index(self) -> NDArray[np.int64]: ...

    @property
    def time_s(self) -> NDArray[np.float64]: ...

    @property
    def keypoints(self) -> NDArray[np.float32]:
        """(T, 33, 5): x_px, y_px, z, visibility, presence; a NaN row where no person was found."""
        ...


def load_track(path: Path) -> PoseTrack:
    """A saved keypoint track: ``.npz`` (``score --pose-out``, an assessment's ``.pose.npz``) or
    MediaPipe's reference ``.mediapipe.json``."""
    path = Path(path)
    if path.name.endswith(REFERENCE_SUFFIX):
        return load_reference_json(path)
    return load_npz(path)


def is_track_file(path: Path) -> bool:
    return path.suffix == ".npz" or path.name.endswith(REFERENCE_SUFFIX)


@dataclass(frozen=True)
class ScoreReport:
    exercise: Exercise
    level: int
    rules_version: str
    rep_count: int
    fouls: dict[str, int]
    end_reason: str
    """"completed" (the track ended) or "violation"."""
    violation: Violation | None
    frames: int
    frames_with_person: int
    reps: tuple[RepCounted, ...]
    fouled_reps: tuple[Foul, ...]
    warnings: tuple[ScoringWarning, ...]


def score_track(track: KeypointTrack, exercise: Exercise, level: int, rules: Rules) -> ScoreReport:
    """Judge a whole track with the live scorer and summarise it."""
    scorer = create_scorer(exercise, level, rules)
    events: list[ScoringEvent] = []
    present = 0
    times = track.time_s
    for row in range(len(times)):
        keypoints = track.keypoints[row]
        person = None if bool(np.isnan(keypoints[:, :2]).all()) else keypoints
        present += person is not None
        events.extend(scorer.update(int(track.frame_index[row]), float(times[row]), person))
        if scorer.finished:
            break
    events.extend(scorer.finish(float(times[-1]) if len(times) else 0.0))
    return ScoreReport(
        exercise=exercise,
        level=level,
        rules_version=rules.version,
        rep_count=scorer.rep_count,
        fouls={code.name: count for code, count in sorted(scorer.fouls.items(), key=str)},
        end_reason="violation" if scorer.violation is not None else "completed",
        violation=scorer.violation,
        frames=len(times),
        frames_with_person=present,
        reps=tuple(event for event in events if isinstance(event, RepCounted)),
        fouled_reps=tuple(event for event in events if isinstance(event, Foul)),
        warnings=tuple(event for event in events if isinstance(event, ScoringWarning)),
    )


def _evidence_json(evidence: RepEvidence) -> dict[str, Any]:
    return {
        "rep_index": evidence.rep_index,
        "start_s": round(evidence.start_time_s, 3),
        "bottom_s": round(evidence.bottom_time_s, 3),
        "end_s": round(evidence.end_time_s, 3),
        "start_frame": evidence.start_frame,
        "bottom_frame": evidence.bottom_frame,
        "end_frame": evidence.end_frame,
        **evidence.measures,
    }


def score_report_json(report: ScoreReport) -> dict[str, Any]:
    """The ``score --json`` document; ``reps[].index`` is the count, ``rep_index`` the attempt."""
    violation = report.violation
    return {
        "exercise": report.exercise.value,
        "level": report.level,
        "rules_version": report.rules_version,
        "rep_count": report.rep_count,
        "fouls": report.fouls,
        "end_reason": report.end_reason,
        "violation": None if violation is None else violation.code.name,
        "violation_detail": "" if violation is None else violation.detail,
        "frames": report.frames,
        "frames_with_person": report.frames_with_person,
        "reps": [{"index": rep.rep_count, **_evidence_json(rep.evidence)} for rep in report.reps],
        "fouled_reps": [
            {"code": foul.code.name, "detail": foul.detail, **_evidence_json(foul.evidence)}
            for foul in report.fouled_reps
        ],
        "warnings": [
            {
                "time_s": round(warning.time_s, 3),
                "code": warning.code.name,
                "detail": warning.detail,
            }
            for warning in report.warnings
        ],
    }


def match_rep_times(
    predicted_s: list[float], labelled_s: list[float], tolerance_s: float = REP_TIME_TOLERANCE_S
) -> list[tuple[float, float]]:
    """One-to-one pairs (predicted, labelled) within the tolerance, as many as possible.

    On a line, matching both sorted lists greedily from the left is optimal.
    """
    pairs: list[tuple[float, float]] = []
    predicted = sorted(predicted_s)
    labelled = sorted(labelled_s)
    index = 0
    for label in labelled:
        while index < len(predicted) and predicted[index] < label - tolerance_s:
            index += 1
        if index < len(predicted) and predicted[index] <= label + tolerance_s:
            pairs.append((predicted[index], label))
            index += 1
    return pairs


@dataclass(frozen=True)
class ClipResult:
    file: str
    exercise: Exercise
    labelled_count: int
    rep_count: int
    labelled_times_s: tuple[float, ...]
    predicted_times_s: tuple[float, ...]
    matched_errors_s: tuple[float, ...]
    """predicted − labelled for each matched repetition."""
    end_reason: str
    violation: str | None
    fouls: dict[str, int]


@dataclass(frozen=True)
class EvaluationReport:
    keypoint_source: str
    level: int
    rules_version: str
    tolerance_s: float
    clips: tuple[ClipResult, ...]

    @property
    def exact_accuracy(self) -> float:
        return _mean([float(clip.rep_count == clip.labelled_count) for clip in self.clips])

    @property
    def off_by_one_accuracy(self) -> float:
        return _mean([float(abs(clip.rep_count - clip.labelled_count) <= 1) for clip in self.clips])

    @property
    def mae_reps(self) -> float:
        return _mean([float(abs(clip.rep_count - clip.labelled_count)) for clip in self.clips])

    @property
    def mae_normalized(self) -> float:
        """TransRAC's MAE: |predicted − labelled| / labelled, averaged over clips."""
        return _mean(
            [
                abs(clip.rep_count - clip.labelled_count) / clip.labelled_count
                for clip in self.clips
                if clip.labelled_count > 0
            ]
        )

    @property
    def rep_precision(self) -> float:
        matched = sum(len(clip.matched_errors_s) for clip in self.clips)
        predicted = sum(len(clip.predicted_times_s) for clip in self.clips)
        return matched / predicted if predicted else math.nan

    @property
    def rep_recall(self) -> float:
        matched = sum(len(clip.matched_errors_s) for clip in self.clips)
        labelled = sum(len(clip.labelled_times_s) for clip in self.clips)
        return matched / labelled if labelled else math.nan


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def evaluate_manifest(
    manifest_path: Path,
    keypoint_source: str = "reference",
    *,
    level: int = DEFAULT_LEVEL,
    rules: Rules | None = None,
    reference_dir: Path | None = None,
    runtime: str = "onnxruntime",
    model_dir: Path | None = None,
    tolerance_s: float = REP_TIME_TOLERANCE_S,
) -> EvaluationReport:
    """Judge every clip of a manifest and compare with its hand counts.

    ``keypoint_source`` "reference" reads ``<reference_dir>/<clip stem>.mediapipe.json``
    (default: ``reference/`` beside the manifest's folder); "engine" runs the server's own pose
    engine over each video (``runtime``, ``model_dir``).
    """
    manifest_path = Path(manifest_path)
    rules = load_rules() if rules is None else rules
    entries = json.loads(manifest_path.read_text(encoding="utf-8"))
    folder = reference_dir or manifest_path.parent.parent / "reference"
    clips: list[ClipResult] = []
    if keypoint_source == "reference":
        for entry in entries:
            track = load_reference_json(folder / (Path(entry["file"]).stem + REFERENCE_SUFFIX))
            clips.append(_judge_clip(entry, track, level, rules, tolerance_s))
    elif keypoint_source == "engine":
        with engine_tracker(runtime, model_dir) as track_of:
            for entry in entries:
                track = track_of(manifest_path.parent / entry["file"])
                clips.append(_judge_clip(entry, track, level, rules, tolerance_s))
    else:
        raise ValueError(
            f"keypoint_source must be 'reference' or 'engine', got {keypoint_source!r}"
        )
    return EvaluationReport(keypoint_source, level, rules.version, tolerance_s, tuple(clips))


def _judge_clip(
    entry: dict[str, Any], track: KeypointTrack, level: int, rules: Rules, tolerance_s: float
) -> ClipResult:
    exercise = Exercise(entry["exercise"])
    report = score_track(track, exercise, level, rules)
    labelled = tuple(float(value) for value in entry.get("rep_times_s", []))
    predicted = tuple(round(rep.evidence.bottom_time_s, 3) for rep in report.reps)
    pairs = match_rep_times(list(predicted), list(labelled), tolerance_s)
    return ClipResult(
        file=entry["file"],
        exercise=exercise,
        labelled_count=int(entry["full_reps"]),
        rep_count=report.rep_count,
        labelled_times_s=labelled,
        predicted_times_s=predicted,
        matched_errors_s=tuple(round(got - want, 3) for got, want in pairs),
        end_reason=report.end_reason,
        violation=None if report.violation is None else report.violation.code.name,
        fouls=report.fouls,
    )


@contextmanager
def engine_tracker(runtime: str, model_dir: Path | None) -> Iterator[Callable[[Path], PoseTrack]]:
    """``video -> track`` through the server's own pose engine, closed afterwards."""
    try:
        engine = load_engine(runtime, model_dir or DEFAULT_MODEL_DIR)
    except (EngineError, ValueError) as error:
        raise ScoringError(f"cannot load the pose engine ({runtime}): {error}") from error
    try:
        yield lambda video: track_video(video, engine)
    finally:
        engine.close()


def evaluation_report_json(report: EvaluationReport) -> dict[str, Any]:
    summary = {
        name: getattr(report, name)
        for name in ("exact_accuracy", "off_by_one_accuracy", "mae_reps", "mae_normalized")
    }
    clips = [{**dataclasses.asdict(clip), "exercise": clip.exercise.value} for clip in report.clips]
    return {
        "keypoint_source": report.keypoint_source,
        "level": report.level,
        "rules_version": report.rules_version,
        "tolerance_s": report.tolerance_s,
        "clips": len(report.clips),
        **summary,
        "rep_precision": report.rep_precision,
        "rep_recall": report.rep_recall,
        "per_clip": clips,
    }


def format_evaluation(report: EvaluationReport) -> str:
    header = f"{'clip':<24} {'exercise':<8} {'truth':>5} {'count':>5} {'matched':>7}"
    lines = [header + "  rep-time errors (s)"]
    for clip in report.clips:
        errors = " ".join(f"{error:+.2f}" for error in clip.matched_errors_s)
        lines.append(
            f"{clip.file:<24} {clip.exercise.value:<8} {clip.labelled_count:>5} {clip.rep_count:>5}"
            f" {len(clip.matched_errors_s):>4}/{len(clip.labelled_times_s):<2}  {errors}"
        )
    lines.append(
        f"{len(report.clips)} clips, level {report.level}, {report.keypoint_source} keypoints:"
        f" exact {report.exact_accuracy:.0%}, off-by-one {report.off_by_one_accuracy:.0%},"
        f" MAE {report.mae_reps:.2f} reps ({report.mae_normalized:.3f} normalized),"
        f" per-rep precision {report.rep_precision:.0%} recall {report.rep_recall:.0%}"
        f" (±{report.tolerance_s:g} s)"
    )
    return "\n".join(lines)


def _add_judging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, help="1..5 (default 5)")
    parser.add_argument("--rules", type=Path, help="judging rules file (default: the shipped one)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--runtime", default="onnxruntime", help="pose engine runtime (video)")
    parser.add_argument("--model-dir", type=Path, help="provisioned pose models")


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fitscore-server score VIDEO``."""
    parser.add_argument(
        "video",
        type=Path,
        help="a video (run through the pose engine), or a saved track: .npz or .mediapipe.json",
    )
    parser.add_argument(
        "--exercise", required=True, choices=[exercise.value for exercise in Exercise]
    )
    parser.add_argument(
        "--keypoints", type=Path, help="judge this saved track instead of running the engine"
    )
    parser.add_argument("--pose-out", type=Path, help="save the judged track here (.npz)")
    _add_judging_arguments(parser)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fitscore-server evaluate MANIFEST``."""
    parser.add_argument("manifest", type=Path, help="manifest.json of hand-counted clips")
    parser.add_argument("--source", choices=["reference", "engine"], default="reference")
    parser.add_argument(
        "--reference-dir", type=Path, help="default: ../reference beside the manifest"
    )
    parser.add_argument("--tolerance-s", type=float, default=REP_TIME_TOLERANCE_S)
    _add_judging_arguments(parser)


def score_command(args: argparse.Namespace) -> int:
    """``fitscore-server score``: judge one video (or saved track) and print the result."""
    try:
        rules = load_rules(args.rules)
        source = args.keypoints or (args.video if is_track_file(args.video) else None)
        if source is not None:
            track = load_track(source)
        else:
            with engine_tracker(args.runtime, args.model_dir) as track_of:
                track = track_of(args.video)
        if args.pose_out is not None:
            save_npz(track, args.pose_out)
        report = score_track(track, Exercise(args.exercise), args.level, rules)
    except (ScoringError, OSError, ValueError, KeyError) as error:
        print(f"fitscore-server score: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(score_report_json(report), ensure_ascii=False, indent=1))
        return 0
    violation = report.violation
    ending = "" if violation is None else f" ({violation.code.name}: {violation.detail})"
    print(
        f"{report.exercise.value} level {report.level}: {report.rep_count} reps,"
        f" fouls {report.fouls or 'none'}, {report.end_reason}{ending}"
    )
    judged: list[RepCounted | Foul] = [*report.reps, *report.fouled_reps]
    for event in sorted(judged, key=lambda event: event.evidence.rep_index):
        evidence = event.evidence
        verdict = (
            f"rep {event.rep_count}"
            if isinstance(event, RepCounted)
            else f"foul {event.code.name}: {event.detail}"
        )
        print(
            f"  {evidence.start_time_s:7.2f}–{evidence.end_time_s:7.2f} s"
            f" (far end {evidence.bottom_time_s:.2f} s) {verdict}"
        )
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """``fitscore-server evaluate``: judge labelled clips and print the accuracy."""
    try:
        report = evaluate_manifest(
            args.manifest,
            args.source,
            level=args.level,
            rules=load_rules(args.rules),
            reference_dir=args.reference_dir,
            runtime=args.runtime,
            model_dir=args.model_dir,
            tolerance_s=args.tolerance_s,
        )
    except (ScoringError, OSError, ValueError, KeyError) as error:
        print(f"fitscore-server evaluate: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(evaluation_report_json(report), ensure_ascii=False, indent=1))
    else:
        print(format_evaluation(report))
    return 0
