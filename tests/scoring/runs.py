"""Drive a scorer over synthetic frames and collect what it said."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.scoring import (
    Exercise,
    Foul,
    FoulCode,
    RepCounted,
    Rules,
    ScoringEvent,
    ScoringWarning,
    Violation,
    ViolationCode,
    WarningCode,
    create_scorer,
    load_rules,
)
from tests.scoring.kinematics import Frame

SHIPPED_RULES = load_rules()


@dataclass(frozen=True)
class Outcome:
    events: tuple[ScoringEvent, ...]
    rep_count: int

    @property
    def reps(self) -> list[RepCounted]:
        return [event for event in self.events if isinstance(event, RepCounted)]

    @property
    def fouls(self) -> list[Foul]:
        return [event for event in self.events if isinstance(event, Foul)]

    @property
    def foul_codes(self) -> list[FoulCode]:
        return [foul.code for foul in self.fouls]

    @property
    def warnings(self) -> list[ScoringWarning]:
        return [event for event in self.events if isinstance(event, ScoringWarning)]

    @property
    def warning_codes(self) -> list[WarningCode]:
        return [warning.code for warning in self.warnings]

    @property
    def violation(self) -> Violation | None:
        found = [event for event in self.events if isinstance(event, Violation)]
        assert len(found) <= 1, found
        return found[0] if found else None

    @property
    def violation_code(self) -> ViolationCode | None:
        return None if self.violation is None else self.violation.code


def run(
    exercise: Exercise,
    frames: Sequence[Frame],
    level: int = 5,
    rules: Rules = SHIPPED_RULES,
    *,
    finish: bool = True,
) -> Outcome:
    scorer = create_scorer(exercise, level, rules)
    events: list[ScoringEvent] = []
    for frame in frames:
        events.extend(scorer.update(frame.index, frame.time_s, frame.keypoints))
    if finish and frames:
        events.extend(scorer.finish(frames[-1].time_s))
    assert scorer.rep_count == sum(isinstance(event, RepCounted) for event in events)
    return Outcome(tuple(events), scorer.rep_count)
