"""Exercise judging: pure state machines from keypoints and timestamps to domain events.

Usage::

    rules = load_rules()                                  # the shipped rules.toml; or a Path
    scorer = create_scorer(Exercise.PUSH_UP, level=5, rules=rules)
    events = scorer.update(frame_index=i, time_s=t, keypoints=array_33x5_or_None)
    events += scorer.finish(time_s=t)                     # end: a rep in progress → PARTIAL_AT_END
    scorer.rep_count, scorer.phase, scorer.fouls, scorer.finished, scorer.violation

A scorer does no I/O and reads no clock. Keypoints are BlazePose's 33×5 (x_px, y_px, z,
visibility, presence) with image y downward; None (or a frame where the exercise's joints are not
seen) counts as no judgeable person.
"""

from __future__ import annotations

from server.scoring.events import (
    Exercise,
    Foul,
    FoulCode,
    Phase,
    RepCounted,
    RepEvidence,
    ScoringEvent,
    ScoringWarning,
    Violation,
    ViolationCode,
    WarningCode,
)
from server.scoring.pullup import PullUpScorer
from server.scoring.pushup import PushUpScorer
from server.scoring.referee import Scorer
from server.scoring.rules import (
    DEFAULT_LEVEL,
    LEVELS,
    LevelError,
    Rules,
    RulesError,
    ScoringError,
    level_rules,
    load_rules,
)
from server.scoring.situp import SitUpScorer

__all__ = [
    "DEFAULT_LEVEL",
    "LEVELS",
    "Exercise",
    "Foul",
    "FoulCode",
    "LevelError",
    "Phase",
    "RepCounted",
    "RepEvidence",
    "Rules",
    "RulesError",
    "Scorer",
    "ScoringError",
    "ScoringEvent",
    "ScoringWarning",
    "Violation",
    "ViolationCode",
    "WarningCode",
    "create_scorer",
    "load_rules",
]


def create_scorer(
    exercise: Exercise, level: int = DEFAULT_LEVEL, rules: Rules | None = None
) -> Scorer:
    """A fresh scorer for one assessment; LevelError outside 1..5, shipped rules when None."""
    rules = load_rules() if rules is None else rules
    if exercise is Exercise.PUSH_UP:
        return PushUpScorer(level_rules(rules.push_up, level), level)
    if exercise is Exercise.SIT_UP:
        return SitUpScorer(level_rules(rules.sit_up, level), level)
    return PullUpScorer(level_rules(rules.pull_up, level), level)
