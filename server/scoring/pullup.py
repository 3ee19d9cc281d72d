"""Pull-up (引体向上) judging: domain.md §4, thresholds in rules.toml ``pullup``.

A repetition starts from a straight-arm hang, pulls until the chin passes the bar (the school
rule's criterion), and is counted as the elbows open again. Its far end (``bottom_*`` in the
evidence) is the moment the chin first reaches the bar, the moment that rule decides on. The arms
must straighten again before the next pull. The bar is the line through the wrists (the hands grip
it); the chin is estimated below the mouth from the head size, taken as a fixed share of the torso
(shoulders to hips), a length the hanging body shows from any camera height. ``pause_s`` without a
pull (no elbow movement of 20°), or the hands well below the shoulders (off the bar), ends the test.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from server.scoring.events import (
    Exercise,
    FoulCode,
    Phase,
    ScoringEvent,
    ViolationCode,
    WarningCode,
)
from server.scoring.geometry import (
    SIDE_JOINTS,
    Keypoints,
    Landmark,
    angle_deg,
    distance_px,
    mean_point,
    midpoint,
    point,
    usable_sides,
    visibility,
)
from server.scoring.referee import Alarm, Attempt, ExerciseScorer, Hold
from server.scoring.rules import PullUpRules

MIN_VISIBILITY = 0.5
"""A joint below this MediaPipe visibility is not judged."""
START_ELBOW_MIN_DEG = 140.0
"""Hanging with arms this straight starts the test. The same at every level, so every level's
clocks start together; whether each pull started from straight arms is judged per level."""
ATTEMPT_ELBOW_MAX_DEG = 120.0
"""Once even the straighter elbow bends below this, a pull is under way."""
REVERSAL_DEG = 20.0
"""Elbows that open this much from the pull's deepest bend and close this much again started a
new pull without hanging straight."""
ATTEMPT_END_DEG = 130.0
"""Once the straighter elbow opens past this again, the pull is over (10° of hysteresis)."""
PROGRESS_DEG = 20.0
"""Elbow movement that counts as progress for the clock between repetitions."""
"""Arms that opened from a pull and bend again by this much before the hang start a new pull."""
HEAD_PER_TORSO = 0.45
"""Head height (crown to chin) as a share of the shoulder–hip length (adult proportions)."""
CHIN_BELOW_MOUTH = 0.25
"""The chin lies this many head heights below the mouth."""
CHIN_BELOW_NOSE = 0.40
"""… or this many below the nose when the mouth is not seen."""
OFF_BAR_DROP_RATIO = 0.3
"""Hands this many torso lengths below the shoulders have left the bar."""
STILL_WINDOW_S = 1.0
"""The first pull must start from a hang that was still over this stretch before its straightest
moment."""
TOP_PLATEAU = 0.05
"""Without a chin at the bar, the far end is the middle of the frames this close to the top."""


@dataclass(frozen=True)
class PullUpFrame:
    """One frame's pull-up measurements."""

    extension_deg: float
    """The straighter judged elbow."""
    chin_clearance: float | None
    """Chin above the bar line, in head heights (negative: below); None without a seen face."""
    hands_on_bar: bool
    """The hands are not well below the shoulders (at the top the shoulders reach the bar)."""
    hip_x_px: float
    torso_length_px: float


def measure_pull_up(keypoints: Keypoints) -> PullUpFrame | None:
    """The frame's pull-up measurements, or None when no arm or torso can be judged."""
    arms = usable_sides(keypoints, ("shoulder", "elbow", "wrist"), MIN_VISIBILITY)
    torso_sides = usable_sides(keypoints, ("shoulder", "hip"), MIN_VISIBILITY)
    if not arms or not torso_sides:
        return None
    shoulder = mean_point([point(keypoints, SIDE_JOINTS[side].shoulder) for side in torso_sides])
    hip = mean_point([point(keypoints, SIDE_JOINTS[side].hip) for side in torso_sides])
    torso_length_px = distance_px(shoulder, hip)
    elbows = [
        angle_deg(*(point(keypoints, joint) for joint in SIDE_JOINTS[side].arm)) for side in arms
    ]
    elbows = [value for value in elbows if value == value]
    if torso_length_px <= 0.0 or not elbows:
        return None
    wrists = [point(keypoints, SIDE_JOINTS[side].wrist) for side in arms]
    wrists_y = sum(wrist[1] for wrist in wrists) / len(wrists)
    hands_on_bar = wrists_y < shoulder[1] + OFF_BAR_DROP_RATIO * torso_length_px
    head_height_px = HEAD_PER_TORSO * torso_length_px
    chin = _chin(keypoints, head_height_px)
    clearance = None
    if chin is not None:
        bar_y = _bar_y_at(wrists, chin[0])
        clearance = (bar_y - chin[1]) / head_height_px
    return PullUpFrame(
        extension_deg=max(elbows),
        chin_clearance=clearance,
        hands_on_bar=hands_on_bar,
        hip_x_px=hip[0],
        torso_length_px=torso_length_px,
    )


def _chin(keypoints: Keypoints, head_height_px: float) -> tuple[float, float] | None:
    mouth = (Landmark.MOUTH_LEFT, Landmark.MOUTH_RIGHT)
    if all(visibility(keypoints, landmark) >= MIN_VISIBILITY for landmark in mouth):
        x, y = midpoint(point(keypoints, mouth[0]), point(keypoints, mouth[1]))
        return (x, y + CHIN_BELOW_MOUTH * head_height_px)
    if visibility(keypoints, Landmark.NOSE) >= MIN_VISIBILITY:
        x, y = point(keypoints, Landmark.NOSE)
        return (x, y + CHIN_BELOW_NOSE * head_height_px)
    return None


def _bar_y_at(wrists: list[tuple[float, float]], x: float) -> float:
    """The height of the line through the wrists at ``x`` (their mean when only one is seen)."""
    if len(wrists) < 2 or wrists[0][0] == wrists[1][0]:
        return sum(wrist[1] for wrist in wrists) / len(wrists)
    (x0, y0), (x1, y1) = wrists[0], wrists[1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


class PullUpScorer(ExerciseScorer[PullUpFrame]):
    """The pull-up state machine: WAITING → UP (hang) → DOWN (pull) → BOTTOM (chin over the bar)
    → RETURNING → UP."""

    exercise = Exercise.PULL_UP

    def __init__(self, rules: PullUpRules, level: int) -> None:
        super().__init__(
            level=level, not_visible_warning_s=rules.not_visible_warning_s, leave_s=rules.leave_s
        )
        self.rules = rules
        self._extension = Hold()
        self._clearance = Hold()
        self._hold_since_s: float | None = None
        self._hang: tuple[int, float] = (0, 0.0)
        self._hang_hips: deque[tuple[float, float]] = deque()
        self._attempt_hips_px: tuple[float, float] = (0.0, 0.0)
        self._hung_straight = False
        self._first_pull = True
        self._still_at_start = True
        self._peak_deg = -math.inf
        self._opened_deg = -math.inf
        self._opened: tuple[int, float] = (0, 0.0)
        self._attempt: Attempt | None = None
        self._progress_anchor_deg = 0.0
        self._pause = Alarm(rules.pause_warning_s, rules.pause_s)
        self._off_bar = Alarm(rules.off_bar_s, rules.off_bar_s)

    def _measure(self, keypoints: Keypoints) -> PullUpFrame | None:
        return measure_pull_up(keypoints)

    def _judge(self, frame_index: int, time_s: float, measure: PullUpFrame) -> list[ScoringEvent]:
        self._extension.update(measure.extension_deg)
        if measure.chin_clearance is not None:
            self._clearance.update(measure.chin_clearance)
        if self._phase is Phase.WAITING:
            self._wait_for_hang(frame_index, time_s, measure)
            return []
        events = self._watch(
            self._off_bar,
            not measure.hands_on_bar,
            time_s,
            None,
            (ViolationCode.OFF_BAR, "hands off the bar"),
        )
        if abs(measure.extension_deg - self._progress_anchor_deg) >= PROGRESS_DEG:
            self._progress_anchor_deg = measure.extension_deg
            self._pause.restart()
        if not self._finished:
            events += self._watch(
                self._pause,
                True,
                time_s,
                (WarningCode.PAUSE, "no repetition"),
                (ViolationCode.PAUSE_TOO_LONG, "no repetition"),
            )
        if self._finished:
            return events
        if self._attempt is None:
            self._between_pulls(frame_index, time_s, measure)
        else:
            events.extend(self._while_pulling(self._attempt, frame_index, time_s, measure))
        return events

    def _straight(self) -> bool:
        return self._extension.at_least >= self.rules.lockout_elbow_min_deg

    def _wait_for_hang(self, frame_index: int, time_s: float, measure: PullUpFrame) -> None:
        if not (measure.hands_on_bar and self._extension.at_least >= START_ELBOW_MIN_DEG):
            self._hold_since_s = None
            return
        if self._hold_since_s is None:
            self._hold_since_s = time_s
        if time_s - self._hold_since_s >= self.rules.start_hold_s:
            self._phase = Phase.UP
            self._progress_anchor_deg = measure.extension_deg
            self._between_pulls(frame_index, time_s, measure)

    def _between_pulls(self, frame_index: int, time_s: float, measure: PullUpFrame) -> None:
        """Hanging or lowering: the hang is the straightest moment since the last pull."""
        if self._extension.at_least >= self._peak_deg:
            self._peak_deg = self._extension.at_least
            self._hang = (frame_index, time_s)
        if self._straight():
            self._hung_straight = True
            self._phase = Phase.UP
        if self._extension.at_least >= START_ELBOW_MIN_DEG:
            self._hang_hips.append((time_s, measure.hip_x_px))
            while self._hang_hips[0][0] < time_s - STILL_WINDOW_S:
                self._hang_hips.popleft()
        if self._extension.at_most < ATTEMPT_ELBOW_MAX_DEG:
            hang_time_s = self._hang[1]
            hips_px = [x for seen_s, x in self._hang_hips if seen_s <= hang_time_s]
            if self._first_pull and hips_px:
                sway = (max(hips_px) - min(hips_px)) / measure.torso_length_px
                self._still_at_start = sway <= self.rules.swing_max_ratio
            self._begin_attempt(*self._hang)
            self._track(frame_index, time_s, measure)

    def _begin_attempt(self, frame_index: int, time_s: float) -> None:
        self._attempt = Attempt(frame_index, time_s, TOP_PLATEAU)
        self._attempt.set("start_elbow_angle_deg", self._peak_deg)
        self._attempt_hips_px = (math.inf, -math.inf)
        self._opened_deg = -math.inf
        self._opened = (frame_index, time_s)
        self._phase = Phase.DOWN

    def _track(self, frame_index: int, time_s: float, measure: PullUpFrame) -> None:
        attempt = self._attempt
        assert attempt is not None
        attempt.keep_min("min_elbow_angle_deg", self._extension.at_most)
        if measure.chin_clearance is not None:
            attempt.keep_max("max_chin_clearance", self._clearance.at_least)
            attempt.track_depth(frame_index, time_s, self._clearance.at_least)
            if attempt.decisive is None and self._clearance.at_least >= 0.0:
                attempt.decisive = (frame_index, time_s)
            if self._clearance.at_least >= self.rules.chin_clearance_min:
                self._phase = Phase.BOTTOM
        left_px, right_px = self._attempt_hips_px
        left_px, right_px = min(left_px, measure.hip_x_px), max(right_px, measure.hip_x_px)
        self._attempt_hips_px = (left_px, right_px)
        attempt.set("swing_ratio", (right_px - left_px) / measure.torso_length_px)

    def _while_pulling(
        self, attempt: Attempt, frame_index: int, time_s: float, measure: PullUpFrame
    ) -> list[ScoringEvent]:
        before_deg = attempt.measures.get("min_elbow_angle_deg", math.inf)
        self._track(frame_index, time_s, measure)
        deepest_deg = attempt.measures.get("min_elbow_angle_deg", math.inf)
        if deepest_deg < before_deg or self._extension.at_least >= self._opened_deg:
            self._opened_deg = self._extension.at_least
            self._opened = (frame_index, time_s)
        climbed = self._opened_deg >= deepest_deg + REVERSAL_DEG
        pulled_again = climbed and self._extension.at_most <= self._opened_deg - REVERSAL_DEG
        if self._extension.at_least <= ATTEMPT_END_DEG and not pulled_again:
            return []
        event = self._conclude(attempt, frame_index, time_s)
        if pulled_again:
            self._peak_deg = self._opened_deg
            self._begin_attempt(*self._opened)
            self._track(frame_index, time_s, measure)
        return [event]

    def _conclude(self, attempt: Attempt, frame_index: int, time_s: float) -> ScoringEvent:
        if self._phase is Phase.BOTTOM:
            event: ScoringEvent = self._judged(self._faults(attempt), attempt, frame_index, time_s)
        else:
            clearance = attempt.measures.get("max_chin_clearance")
            reached = "no face seen" if clearance is None else f"{clearance:+.2f} head heights"
            needed = self.rules.chin_clearance_min
            detail = f"chin reached {reached} over the bar (needs ≥ {needed:+.2f})"
            event = self._foul(FoulCode.CHIN_NOT_OVER_BAR, detail, attempt, frame_index, time_s)
        self._attempt = None
        self._first_pull = False
        self._hung_straight = False
        self._hang_hips.clear()
        self._phase = Phase.RETURNING
        self._peak_deg = self._extension.at_least
        self._hang = (frame_index, time_s)
        return event

    def _faults(self, attempt: Attempt) -> list[tuple[FoulCode, str]]:
        rules = self.rules
        faults: list[tuple[FoulCode, str]] = []
        if not self._hung_straight:
            start_deg = attempt.measures.get("start_elbow_angle_deg", 0.0)
            faults.append(
                (
                    FoulCode.ARMS_NOT_EXTENDED,
                    f"arms straightened to {start_deg:.0f}° before the pull"
                    f" (needs ≥ {rules.lockout_elbow_min_deg:.0f}°)",
                )
            )
        if self._first_pull and not self._still_at_start:
            faults.append(
                (FoulCode.NOT_STILL_AT_START, "the first pull did not start from a still hang")
            )
        sway = attempt.measures.get("swing_ratio", 0.0)
        if sway > rules.swing_max_ratio:
            faults.append(
                (
                    FoulCode.SWINGING,
                    f"hips swung {sway:.2f} torso lengths (allowed {rules.swing_max_ratio:.2f})",
                )
            )
        return faults

    def _finish_attempt(self, time_s: float) -> list[ScoringEvent]:
        attempt = self._attempt
        if attempt is None:
            return []
        frame_index = self.last_frame_index
        if self._phase is Phase.BOTTOM:
            return [self._judged(self._faults(attempt), attempt, frame_index, time_s)]
        detail = "the assessment ended before the chin passed the bar"
        return [self._foul(FoulCode.PARTIAL_AT_END, detail, attempt, frame_index, time_s)]
