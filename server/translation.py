"""Scoring's domain events → the contract's AssessmentEvent payloads.

The scorer judges on assessment-relative frame indexes and stream times (0 = the first frame after
Start); the evidence video may begin a little earlier, at the keyframe before Start, so every media
offset is the stream time plus that pre-roll.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from client import assessment_pb2 as pb
from server.scoring import (
    Exercise,
    Foul,
    RepCounted,
    RepEvidence,
    Scorer,
    ScoringEvent,
    ScoringWarning,
    Violation,
)

EXERCISES = {
    pb.EXERCISE_PUSH_UP: Exercise.PUSH_UP,
    pb.EXERCISE_SIT_UP: Exercise.SIT_UP,
    pb.EXERCISE_PULL_UP: Exercise.PULL_UP,
}


@dataclass(frozen=True)
class Translated:
    """The event to publish (None for a violation, which the Finished event reports)."""

    event: pb.AssessmentEvent | None
    violation: pb.ViolationCode.ValueType = pb.VIOLATION_CODE_UNSPECIFIED
    detail: str = ""


def _nanoseconds(seconds: float) -> int:
    return round(max(seconds, 0.0) * 1e9)


MediaClock = Callable[[float], float]
"""Judging time (seconds since the first frame, camera outages left out) → evidence video time."""


def evidence_message(evidence: RepEvidence, media_s: MediaClock) -> pb.RepEvidence:
    message = pb.RepEvidence(
        rep_index=evidence.rep_index,
        start_frame=evidence.start_frame,
        bottom_frame=evidence.bottom_frame,
        end_frame=evidence.end_frame,
        measures=dict(evidence.measures),
    )
    message.start_offset.FromNanoseconds(_nanoseconds(media_s(evidence.start_time_s)))
    message.bottom_offset.FromNanoseconds(_nanoseconds(media_s(evidence.bottom_time_s)))
    message.end_offset.FromNanoseconds(_nanoseconds(media_s(evidence.end_time_s)))
    return message


def translate(scoring_event: ScoringEvent, *, frame_index: int, media_s: MediaClock) -> Translated:
    """The contract's view of one scoring event judged at ``frame_index``."""
    event = pb.AssessmentEvent(frame_index=frame_index)
    if isinstance(scoring_event, RepCounted):
        evidence = scoring_event.evidence
        event.frame_index = evidence.end_frame
        event.media_offset.FromNanoseconds(_nanoseconds(media_s(evidence.end_time_s)))
        event.rep_counted.rep_count = scoring_event.rep_count
        event.rep_counted.evidence.CopyFrom(evidence_message(evidence, media_s))
        return Translated(event)
    if isinstance(scoring_event, Foul):
        evidence = scoring_event.evidence
        event.frame_index = evidence.end_frame
        event.media_offset.FromNanoseconds(_nanoseconds(media_s(evidence.end_time_s)))
        event.foul.code = pb.FoulCode.Value("FOUL_CODE_" + scoring_event.code.name)
        event.foul.detail = scoring_event.detail
        event.foul.evidence.CopyFrom(evidence_message(evidence, media_s))
        return Translated(event)
    if isinstance(scoring_event, ScoringWarning):
        event.media_offset.FromNanoseconds(_nanoseconds(media_s(scoring_event.time_s)))
        event.warning.code = pb.WarningCode.Value("WARNING_CODE_" + scoring_event.code.name)
        event.warning.detail = scoring_event.detail
        return Translated(event)
    assert isinstance(scoring_event, Violation)
    code = pb.ViolationCode.Value("VIOLATION_CODE_" + scoring_event.code.name)
    return Translated(None, violation=code, detail=scoring_event.detail)


def phase_of(scorer: Scorer) -> pb.Phase.ValueType:
    return pb.Phase.Value("PHASE_" + scorer.phase.name)


__all__ = [
    "EXERCISES",
    "MediaClock",
    "Translated",
    "evidence_message",
    "phase_of",
    "translate",
]
