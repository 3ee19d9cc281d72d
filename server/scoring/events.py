"""Domain events a scorer emits, and the codes they carry.

Enum member names mirror ``protos/fitscore/v1/assessment.proto`` without its prefixes
(``FoulCode.NOT_LOW_ENOUGH`` is ``FOUL_CODE_NOT_LOW_ENOUGH``), so the service maps them by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType


class Exercise(Enum):
    """The exercises fitscore judges; values are the command-line and manifest spellings."""

    PUSH_UP = "push-up"
    SIT_UP = "sit-up"
    PULL_UP = "pull-up"


class Phase(Enum):
    """Where the current repetition is, in the proto's exercise-neutral terms.

    Push-up: UP = arms locked out, DOWN = descending, BOTTOM = at depth, RETURNING = pushing up.
    Sit-up: UP = lying (the start position), DOWN = rising, BOTTOM = sitting up, RETURNING = lying
    back. Pull-up: UP = straight-arm hang, DOWN = pulling, BOTTOM = chin over the bar, RETURNING =
    lowering.
    """

    WAITING = "waiting"
    UP = "up"
    DOWN = "down"
    BOTTOM = "bottom"
    RETURNING = "returning"


class FoulCode(Enum):
    """Why a repetition was not counted; the assessment goes on."""

    NOT_LOW_ENOUGH = "not_low_enough"
    ARMS_NOT_EXTENDED = "arms_not_extended"
    HIPS_SAGGING = "hips_sagging"
    HIPS_RAISED = "hips_raised"
    BOUNCE = "bounce"
    NOT_UP = "not_up"
    NOT_DOWN = "not_down"
    HANDS_OFF_HEAD = "hands_off_head"
    HIPS_LIFTED = "hips_lifted"
    CHIN_NOT_OVER_BAR = "chin_not_over_bar"
    SWINGING = "swinging"
    NOT_STILL_AT_START = "not_still_at_start"
    PARTIAL_AT_END = "partial_at_end"


class ViolationCode(Enum):
    """违停: a rule violation that ends the assessment."""

    RESTING = "resting"
    KNEE_DOWN = "knee_down"
    PAUSE_TOO_LONG = "pause_too_long"
    LEFT_POSITION = "left_position"
    HAND_OR_FOOT_MOVED = "hand_or_foot_moved"
    OFF_BAR = "off_bar"


class WarningCode(Enum):
    """Scoring warnings: the assessment goes on, a violation may follow."""

    PERSON_NOT_VISIBLE = "person_not_visible"
    PAUSE = "pause"
    RESTING = "resting"


@dataclass(frozen=True)
class RepEvidence:
    """What was measured over one attempt (counted or fouled).

    ``bottom_*`` is the attempt's far end: the lowest point of a push-up, the most upright moment
    of a sit-up, the highest chin of a pull-up. ``measures`` holds the numbers that decided it, by
    name with their unit (``_deg``, ``_ratio``); a measure the camera could not see is left out.
    """

    rep_index: int
    """1-based number of this attempt among all attempts, counted or fouled."""
    start_frame: int
    bottom_frame: int
    end_frame: int
    start_time_s: float
    bottom_time_s: float
    end_time_s: float
    measures: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "measures", MappingProxyType(dict(self.measures)))


@dataclass(frozen=True)
class RepCounted:
    """A repetition met the standard; ``rep_count`` is the count after it."""

    rep_count: int
    evidence: RepEvidence


@dataclass(frozen=True)
class Foul:
    """A repetition was not counted; ``detail`` says why in a sentence for the examiner."""

    code: FoulCode
    detail: str
    evidence: RepEvidence


@dataclass(frozen=True)
class ScoringWarning:
    """Something the examinee should hear; the assessment goes on."""

    code: WarningCode
    detail: str
    time_s: float


@dataclass(frozen=True)
class Violation:
    """A rule violation that ended the assessment; the scorer accepts no more frames."""

    code: ViolationCode
    detail: str
    time_s: float
    evidence: RepEvidence | None = None


ScoringEvent = RepCounted | Foul | ScoringWarning | Violation
