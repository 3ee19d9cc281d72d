"""What every exercise scorer shares: the count, the fouls, the clocks, the end.

A :class:`Scorer` is fed one frame at a time (index, timestamp, keypoints or None) and returns the
domain events that frame caused. It never reads a clock: durations come from frame timestamps, so
skipped frames do not break a repetition. After a :class:`Violation` or :meth:`Scorer.finish` it is
finished and ignores further frames.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from enum import Enum
from typing import ClassVar, Generic, Protocol, TypeVar

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
from server.scoring.geometry import LANDMARK_COUNT, Keypoints

MAX_FRAME_PERIOD_S = 0.2
"""A gap longer than this between judged frames counts as this much time in a condition run."""


class AlarmLevel(Enum):
    QUIET = "quiet"
    WARNING = "warning"
    LIMIT = "limit"


class Alarm:
    """A condition that must not last: a warning after ``warning_s``, then the limit."""

    def __init__(self, warning_s: float, limit_s: float) -> None:
        self._warning_s = warning_s
        self._limit_s = limit_s
        self._since_s: float | None = None
        self._warned = False

    def restart(self, time_s: float | None = None) -> None:
        """Forget the current episode; with ``time_s`` a new one starts at once."""
        self._since_s = time_s
        self._warned = False

    def elapsed_s(self, time_s: float) -> float:
        return 0.0 if self._since_s is None else time_s - self._since_s

    def check(self, active: bool, time_s: float) -> AlarmLevel:
        """WARNING once per episode when it passes ``warning_s``; LIMIT when it passes the limit."""
        if not active:
            self.restart()
            return AlarmLevel.QUIET
        if self._since_s is None:
            self._since_s = time_s
        elapsed_s = time_s - self._since_s
        if elapsed_s >= self._limit_s:
            return AlarmLevel.LIMIT
        if not self._warned and self._warning_s < self._limit_s and elapsed_s >= self._warning_s:
            self._warned = True
            return AlarmLevel.WARNING
        return AlarmLevel.QUIET


class ConditionRun:
    """The longest unbroken run of frames in which a fault held, in seconds of frames.

    A run of a single frame lasts zero seconds: one glitched frame is never a fault.
    """

    def __init__(self) -> None:
        self._frames = 0
        self._current_s = 0.0
        self.longest_s = 0.0

    def update(self, active: bool, frame_period_s: float) -> None:
        if not active:
            self._frames = 0
            self._current_s = 0.0
            return
        self._frames += 1
        self._current_s += frame_period_s
        if self._frames >= 2:
            self.longest_s = max(self.longest_s, self._current_s)

    def exceeds(self, tolerance_s: float) -> bool:
        return self.longest_s > tolerance_s + 1e-3


class Hold:
    """A signal as held over two consecutive judged frames, so a one-frame glitch moves nothing.

    ``at_least`` is the level both frames reached or passed (their minimum), ``at_most`` the level
    both stayed at or under (their maximum). A state change or an extreme is taken from these.
    """

    def __init__(self) -> None:
        self._previous: float | None = None
        self.at_least = math.nan
        self.at_most = math.nan

    def update(self, value: float) -> None:
        """Take the next frame's value; until two frames are in, nothing is held (NaN)."""
        previous = self._previous
        self._previous = value
        if previous is None:
            return
        self.at_least = min(value, previous)
        self.at_most = max(value, previous)


class Attempt:
    """One repetition attempt in progress: its moments and the extremes measured over it.

    The far end (``bottom``) is the middle of the plateau where the depth signal stays within
    ``plateau_tolerance`` of its extreme: a held bottom or top is judged by its middle, as an
    examiner would, not by whichever frame jitter made deepest.
    """

    def __init__(self, frame_index: int, time_s: float, plateau_tolerance: float) -> None:
        self.start_frame = frame_index
        self.start_time_s = time_s
        self.measures: dict[str, float] = {}
        self._plateau_tolerance = plateau_tolerance
        self._depth_samples: list[tuple[int, float, float]] = []
        self.decisive: tuple[int, float] | None = None
        """Set by an exercise whose far end is a pass line rather than a held extreme."""

    def track_depth(self, frame_index: int, time_s: float, depth: float) -> None:
        """Record the signal whose maximum marks the far end (greater = further from the start)."""
        if math.isfinite(depth):
            self._depth_samples.append((frame_index, time_s, depth))

    def bottom(self) -> tuple[int, float]:
        """The frame and time of the far end: the decisive moment if one was set, otherwise the
        middle of the plateau around the extreme."""
        if self.decisive is not None:
            return self.decisive
        samples = self._depth_samples
        if not samples:
            return (self.start_frame, self.start_time_s)
        deepest = max(range(len(samples)), key=lambda index: samples[index][2])
        floor = samples[deepest][2] - self._plateau_tolerance
        first = last = deepest
        while first > 0 and samples[first - 1][2] >= floor:
            first -= 1
        while last < len(samples) - 1 and samples[last + 1][2] >= floor:
            last += 1
        middle_s = (samples[first][1] + samples[last][1]) / 2.0
        nearest = min(samples[first : last + 1], key=lambda sample: abs(sample[1] - middle_s))
        return (nearest[0], nearest[1])

    def keep_min(self, name: str, value: float | None) -> bool:
        """Record ``value`` if it is the smallest so far; True when it was."""
        if value is None or not math.isfinite(value):
            return False
        if name not in self.measures or value < self.measures[name]:
            self.measures[name] = value
            return True
        return False

    def keep_max(self, name: str, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if name not in self.measures or value > self.measures[name]:
            self.measures[name] = value
            return True
        return False

    def set(self, name: str, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self.measures[name] = value

    def evidence(self, rep_index: int, end_frame: int, end_time_s: float) -> RepEvidence:
        bottom_frame, bottom_time_s = self.bottom()
        return RepEvidence(
            rep_index=rep_index,
            start_frame=self.start_frame,
            bottom_frame=bottom_frame,
            end_frame=end_frame,
            start_time_s=self.start_time_s,
            bottom_time_s=bottom_time_s,
            end_time_s=end_time_s,
            measures={name: round(value, 4) for name, value in self.measures.items()},
        )


class Scorer(Protocol):
    """What the service drives: one scorer per assessment, fed frame by frame."""

    @property
    def exercise(self) -> Exercise: ...

    @property
    def level(self) -> int: ...

    @property
    def rep_count(self) -> int: ...

    @property
    def fouls(self) -> Counter[FoulCode]: ...

    @property
    def phase(self) -> Phase: ...

    @property
    def finished(self) -> bool: ...

    @property
    def violation(self) -> Violation | None: ...

    def update(
        self, frame_index: int, time_s: float, keypoints: Keypoints | None
    ) -> list[ScoringEvent]: ...

    def finish(self, time_s: float) -> list[ScoringEvent]: ...


FrameMeasure = TypeVar("FrameMeasure")


class ExerciseScorer(ABC, Generic[FrameMeasure]):
    """The part of a scorer every exercise shares; subclasses judge the measured frames."""

    exercise: ClassVar[Exercise]

    def __init__(self, *, level: int, not_visible_warning_s: float, leave_s: float) -> None:
        self._level = level
        self._rep_count = 0
        self._attempt_count = 0
        self._fouls: Counter[FoulCode] = Counter()
        self._phase = Phase.WAITING
        self._violation: Violation | None = None
        self._finished = False
        self._absence = Alarm(not_visible_warning_s, leave_s)
        self._last_frame: tuple[int, float] | None = None
        self._frame_period_s = 0.0

    @property
    def level(self) -> int:
        return self._level

    @property
    def rep_count(self) -> int:
        return self._rep_count

    @property
    def fouls(self) -> Counter[FoulCode]:
        """Fouled repetitions by code (a copy)."""
        return Counter(self._fouls)

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def violation(self) -> Violation | None:
        return self._violation

    def update(
        self, frame_index: int, time_s: float, keypoints: Keypoints | None
    ) -> list[ScoringEvent]:
        """Judge one frame; ``keypoints`` is the person's 33×5 array, or None for no person."""
        if self._finished:
            return []
        if self._last_frame is not None:
            time_s = max(time_s, self._last_frame[1])
            self._frame_period_s = min(time_s - self._last_frame[1], MAX_FRAME_PERIOD_S)
        self._last_frame = (frame_index, time_s)
        if keypoints is not None and (keypoints.ndim != 2 or keypoints.shape[0] < LANDMARK_COUNT):
            raise ValueError(f"keypoints must be 33×5 BlazePose landmarks, got {keypoints.shape}")
        measure = None if keypoints is None else self._measure(keypoints)
        absent = "no judgeable person in view"
        events = self._watch(
            self._absence,
            measure is None,
            time_s,
            (WarningCode.PERSON_NOT_VISIBLE, absent),
            (ViolationCode.LEFT_POSITION, absent),
        )
        if measure is not None and not self._finished:
            events.extend(self._judge(frame_index, time_s, measure))
        return events

    def finish(self, time_s: float) -> list[ScoringEvent]:
        """End of the assessment: report the repetition in progress, then stop."""
        if self._finished:
            return []
        events = self._finish_attempt(time_s)
        self._finished = True
        return events

    @property
    def last_frame_index(self) -> int:
        return -1 if self._last_frame is None else self._last_frame[0]

    @property
    def last_time_s(self) -> float:
        return 0.0 if self._last_frame is None else self._last_frame[1]

    @abstractmethod
    def _measure(self, keypoints: Keypoints) -> FrameMeasure | None:
        """The frame's measurements, or None when this exercise cannot be judged on it."""

    @abstractmethod
    def _judge(self, frame_index: int, time_s: float, measure: FrameMeasure) -> list[ScoringEvent]:
        """Advance the state machine by one measured frame."""

    @abstractmethod
    def _finish_attempt(self, time_s: float) -> list[ScoringEvent]:
        """Events for the attempt in progress when the assessment ends."""

    def _count(self, attempt: Attempt, frame_index: int, time_s: float) -> RepCounted:
        self._attempt_count += 1
        self._rep_count += 1
        evidence = attempt.evidence(self._attempt_count, frame_index, time_s)
        return RepCounted(rep_count=self._rep_count, evidence=evidence)

    def _foul(
        self, code: FoulCode, detail: str, attempt: Attempt, frame_index: int, time_s: float
    ) -> Foul:
        self._attempt_count += 1
        self._fouls[code] += 1
        evidence = attempt.evidence(self._attempt_count, frame_index, time_s)
        return Foul(code=code, detail=detail, evidence=evidence)

    def _judged(
        self,
        faults: list[tuple[FoulCode, str]],
        attempt: Attempt,
        frame_index: int,
        time_s: float,
    ) -> RepCounted | Foul:
        """Count the attempt, or foul it with its first fault (the others join the detail)."""
        if not faults:
            return self._count(attempt, frame_index, time_s)
        code, detail = faults[0]
        if len(faults) > 1:
            detail = "; ".join([detail, *(other for _, other in faults[1:])])
        return self._foul(code, detail, attempt, frame_index, time_s)

    def _warn(self, code: WarningCode, detail: str, time_s: float) -> ScoringWarning:
        return ScoringWarning(code=code, detail=detail, time_s=time_s)

    def _violate(
        self,
        code: ViolationCode,
        detail: str,
        time_s: float,
        evidence: RepEvidence | None = None,
    ) -> Violation:
        self._violation = Violation(code=code, detail=detail, time_s=time_s, evidence=evidence)
        self._finished = True
        return self._violation

    def _watch(
        self,
        alarm: Alarm,
        active: bool,
        time_s: float,
        warning: tuple[WarningCode, str] | None,
        violation: tuple[ViolationCode, str],
    ) -> list[ScoringEvent]:
        """Run an alarm; a warning or the violation it raises, as events."""
        level = alarm.check(active, time_s)
        if level is AlarmLevel.WARNING and warning is not None:
            return [self._warn(warning[0], warning[1], time_s)]
        if level is AlarmLevel.LIMIT:
            code, detail = violation
            elapsed = alarm.elapsed_s(time_s)
            return [self._violate(code, f"{detail} for {elapsed:.1f} s", time_s)]
        return []
