"""Sit-up (仰卧起坐) judging: domain.md §3, thresholds in rules.toml ``situp``.

A repetition starts lying down (the torso back within a few degrees of horizontal: shoulder blades
on the mat), rises until the shoulder–hip–knee angle closes to the level's threshold (elbows to the
knees), and is counted as the examinee leaves the top (Chinese school rule: the rep counts when
the elbows reach the knees; waiting for the way back down only lets the most upright frame be
found). The next repetition must start from lying down again. Hands must stay on the head or the
shoulders and the hips on the mat throughout the rise. Judged from a side view.
"""

from __future__ import annotations

import math
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
    Point,
    angle_deg,
    distance_px,
    inclination_deg,
    mean_point,
    point,
    usable_sides,
    visibility,
)
from server.scoring.referee import Alarm, Attempt, ConditionRun, ExerciseScorer, Hold
from server.scoring.rules import HandPosition, SitUpRules

MIN_VISIBILITY = 0.5
"""A joint below this MediaPipe visibility is not judged."""
ATTEMPT_MARGIN_DEG = 15.0
"""The torso rose this far above the lying threshold: a repetition is under way."""
START_TORSO_MAX_DEG = 35.0
"""A torso this flat starts the test. The same at every level, so every level's clocks start
together; whether each repetition began from lying flat is judged at the level's threshold."""
REST_TORSO_MAX_DEG = 35.0
"""Lying back this flat, the resting clock runs (the same at every level)."""
TOP_EXIT_MARGIN_DEG = 15.0
"""The hip angle opened this far past the up threshold: the examinee left the top."""
TOP_PLATEAU_DEG = 5.0
"""The most upright moment is the middle of the frames within this of the smallest hip angle."""
HAND_MIN_VISIBILITY = 0.9
"""Hands are judged only where plainly seen: a hand off the head is in view, while a hand behind
the head is hidden and MediaPipe's guess for it wanders by a torso length (measured)."""


@dataclass(frozen=True)
class SitUpFrame:
    """One frame's sit-up measurements."""

    torso_inclination_deg: float
    """Hip→shoulder above the horizontal: about 0 lying, about 90 sitting up."""
    hip_angle_deg: float
    """Shoulder–hip–knee; closes as the examinee sits up."""
    hip_y_px: float
    torso_length_px: float
    hand_distance_ratio: float | None
    """The seen wrist farthest from its allowed place, in torso lengths; None when none is seen."""


def measure_sit_up(keypoints: Keypoints, hand_position: HandPosition) -> SitUpFrame | None:
    """The frame's sit-up measurements, or None when the torso and thigh cannot be judged."""
    legs = usable_sides(keypoints, ("shoulder", "hip", "knee"), MIN_VISIBILITY)
    if not legs:
        return None
    shoulder = mean_point([point(keypoints, SIDE_JOINTS[side].shoulder) for side in legs])
    hip = mean_point([point(keypoints, SIDE_JOINTS[side].hip) for side in legs])
    torso_length_px = distance_px(shoulder, hip)
    hip_angles = [
        angle_deg(
            point(keypoints, SIDE_JOINTS[side].shoulder),
            point(keypoints, SIDE_JOINTS[side].hip),
            point(keypoints, SIDE_JOINTS[side].knee),
        )
        for side in legs
    ]
    hip_angles = [value for value in hip_angles if math.isfinite(value)]
    if torso_length_px <= 0.0 or not hip_angles:
        return None
    return SitUpFrame(
        torso_inclination_deg=inclination_deg(hip, shoulder),
        hip_angle_deg=sum(hip_angles) / len(hip_angles),
        hip_y_px=hip[1],
        torso_length_px=torso_length_px,
        hand_distance_ratio=_hand_distance_ratio(keypoints, hand_position, torso_length_px),
    )


def _hand_distance_ratio(
    keypoints: Keypoints, hand_position: HandPosition, torso_length_px: float
) -> float | None:
    head_landmarks = [
        landmark
        for landmark in (Landmark.LEFT_EAR, Landmark.RIGHT_EAR, Landmark.NOSE)
        if visibility(keypoints, landmark) >= MIN_VISIBILITY
    ]
    head = mean_point([point(keypoints, landmark) for landmark in head_landmarks])
    shoulders = [point(keypoints, SIDE_JOINTS[side].shoulder) for side in SIDE_JOINTS]
    distances: list[float] = []
    for side in usable_sides(keypoints, ("wrist",), HAND_MIN_VISIBILITY):
        wrist = point(keypoints, SIDE_JOINTS[side].wrist)
        targets: list[Point] = []
        if hand_position is not HandPosition.CROSSED_ON_CHEST and head_landmarks:
            targets.append(head)
        if hand_position is not HandPosition.BEHIND_HEAD:
            targets.extend(shoulders)
        if targets:
            distances.append(min(distance_px(wrist, target) for target in targets))
    if not distances:
        return None
    return max(distances) / torso_length_px


class SitUpScorer(ExerciseScorer[SitUpFrame]):
    """The sit-up state machine: WAITING → UP (lying) → DOWN (rising) → BOTTOM (up) → RETURNING."""

    exercise = Exercise.SIT_UP

    def __init__(self, rules: SitUpRules, level: int) -> None:
        super().__init__(
            level=level, not_visible_warning_s=rules.not_visible_warning_s, leave_s=rules.leave_s
        )
        self.rules = rules
        self._inclination = Hold()
        self._hip = Hold()
        self._hold_since_s: float | None = None
        self._lying: tuple[int, float, SitUpFrame] | None = None
        self._from_lying = True
        self._attempt: Attempt | None = None
        self._hands = ConditionRun()
        self._hips = ConditionRun()
        self._most_open_deg = 0.0
        self._most_open: tuple[int, float] = (0, 0.0)
        self._rest = Alarm(rules.rest_warning_s, rules.rest_s)

    def _measure(self, keypoints: Keypoints) -> SitUpFrame | None:
        return measure_sit_up(keypoints, self.rules.hand_position)

    def _judge(self, frame_index: int, time_s: float, measure: SitUpFrame) -> list[ScoringEvent]:
        rules = self.rules
        self._inclination.update(measure.torso_inclination_deg)
        self._hip.update(measure.hip_angle_deg)
        lying = self._inclination.at_most <= rules.down_torso_max_deg
        if self._phase is Phase.WAITING:
            self._wait_for_start(frame_index, time_s, measure, lying)
            return []
        events = self._watch(
            self._rest,
            self._inclination.at_most <= REST_TORSO_MAX_DEG,
            time_s,
            (WarningCode.RESTING, "lying still"),
            (ViolationCode.RESTING, "lying still"),
        )
        if self._finished:
            return events
        if self._phase is Phase.UP:
            self._while_lying(frame_index, time_s, measure, lying)
        elif self._phase is Phase.RETURNING:
            self._while_returning(frame_index, time_s, measure, lying)
        elif self._attempt is not None:
            events.extend(self._while_rising(self._attempt, frame_index, time_s, measure, lying))
        return events

    def _wait_for_start(
        self, frame_index: int, time_s: float, measure: SitUpFrame, lying: bool
    ) -> None:
        if not self._inclination.at_most <= START_TORSO_MAX_DEG:
            self._hold_since_s = None
            return
        if self._hold_since_s is None:
            self._hold_since_s = time_s
        if time_s - self._hold_since_s >= self.rules.start_hold_s:
            self._lie_down(frame_index, time_s, measure, lying)

    def _lie_down(
        self, frame_index: int, time_s: float, measure: SitUpFrame, lying: bool = True
    ) -> None:
        self._phase = Phase.UP
        self._lying = (frame_index, time_s, measure)
        self._from_lying = lying

    def _while_lying(
        self, frame_index: int, time_s: float, measure: SitUpFrame, lying: bool
    ) -> None:
        rules = self.rules
        rising = self._inclination.at_least > rules.down_torso_max_deg + ATTEMPT_MARGIN_DEG
        if lying:
            self._lying = (frame_index, time_s, measure)
            self._from_lying = True
        elif rising or self._hip.at_most <= rules.up_hip_max_deg:
            assert self._lying is not None
            start_frame, start_time_s, _ = self._lying
            self._begin_attempt(start_frame, start_time_s)
            assert self._attempt is not None
            self._track(self._attempt, frame_index, time_s, measure)

    def _while_returning(
        self, frame_index: int, time_s: float, measure: SitUpFrame, lying: bool
    ) -> None:
        if lying:
            self._lie_down(frame_index, time_s, measure)
            return
        if self._hip.at_least >= self._most_open_deg:
            self._most_open_deg = self._hip.at_least
            self._most_open = (frame_index, time_s)
        if self._hip.at_most <= self.rules.up_hip_max_deg:
            self._from_lying = False
            self._begin_attempt(*self._most_open)
            assert self._attempt is not None
            self._track(self._attempt, frame_index, time_s, measure)

    def _begin_attempt(self, frame_index: int, time_s: float) -> None:
        self._attempt = Attempt(frame_index, time_s, TOP_PLATEAU_DEG)
        self._hands = ConditionRun()
        self._hips = ConditionRun()
        self._phase = Phase.DOWN

    def _track(
        self, attempt: Attempt, frame_index: int, time_s: float, measure: SitUpFrame
    ) -> None:
        attempt.keep_min("min_hip_angle_deg", self._hip.at_most)
        attempt.track_depth(frame_index, time_s, -self._hip.at_most)
        attempt.keep_max("max_torso_inclination_deg", measure.torso_inclination_deg)
        if self._phase is Phase.DOWN:
            self._judge_form(attempt, measure)
        if self._hip.at_most <= self.rules.up_hip_max_deg:
            self._phase = Phase.BOTTOM

    def _judge_form(self, attempt: Attempt, measure: SitUpFrame) -> None:
        """Hands and hips over the rise, up to the frame that reaches the top."""
        rules = self.rules
        if self._lying is not None and self._from_lying:
            _, _, lying = self._lying
            attempt.set("start_torso_inclination_deg", lying.torso_inclination_deg)
            rise = (lying.hip_y_px - measure.hip_y_px) / lying.torso_length_px
            attempt.keep_max("max_hip_lift_ratio", rise)
            self._hips.update(rise > rules.hip_lift_max_ratio, self._frame_period_s)
        hands = measure.hand_distance_ratio
        attempt.keep_max("max_hand_distance_ratio", hands)
        self._hands.update(
            hands is not None and hands > rules.hands_max_ratio, self._frame_period_s
        )

    def _while_rising(
        self, attempt: Attempt, frame_index: int, time_s: float, measure: SitUpFrame, lying: bool
    ) -> list[ScoringEvent]:
        rules = self.rules
        if self._phase is Phase.DOWN and lying:
            hip_deg = attempt.measures["min_hip_angle_deg"]
            detail = f"hip angle closed to {hip_deg:.0f}° (needs ≤ {rules.up_hip_max_deg:.0f}°)"
            foul = self._foul(FoulCode.NOT_UP, detail, attempt, frame_index, time_s)
            self._attempt = None
            self._lie_down(frame_index, time_s, measure)
            return [foul]
        if self._phase is Phase.BOTTOM:
            if lying or self._hip.at_least > rules.up_hip_max_deg + TOP_EXIT_MARGIN_DEG:
                event = self._judged(self._faults(attempt), attempt, frame_index, time_s)
                self._attempt = None
                self._phase = Phase.RETURNING
                self._most_open_deg = self._hip.at_least
                self._most_open = (frame_index, time_s)
                if lying:
                    self._lie_down(frame_index, time_s, measure)
                return [event]
            self._track(attempt, frame_index, time_s, measure)
            return []
        self._track(attempt, frame_index, time_s, measure)
        return []

    def _faults(self, attempt: Attempt) -> list[tuple[FoulCode, str]]:
        rules = self.rules
        faults: list[tuple[FoulCode, str]] = []
        if not self._from_lying:
            faults.append((FoulCode.NOT_DOWN, "did not lie back down before sitting up again"))
        if self._hands.exceeds(rules.form_tolerance_s):
            distance = attempt.measures["max_hand_distance_ratio"]
            faults.append(
                (
                    FoulCode.HANDS_OFF_HEAD,
                    f"hands {distance:.2f} torso lengths from their place for"
                    f" {self._hands.longest_s:.2f} s (allowed {rules.hands_max_ratio:.2f})",
                )
            )
        if self._hips.exceeds(rules.form_tolerance_s):
            lift = attempt.measures["max_hip_lift_ratio"]
            faults.append(
                (
                    FoulCode.HIPS_LIFTED,
                    f"hips rose {lift:.2f} torso lengths off the mat"
                    f" (allowed {rules.hip_lift_max_ratio:.2f})",
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
        detail = "the assessment ended before the examinee sat up"
        return [self._foul(FoulCode.PARTIAL_AT_END, detail, attempt, frame_index, time_s)]
