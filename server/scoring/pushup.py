"""Push-up (俯卧撑) judging: domain.md §2, thresholds in rules.toml ``pushup``.

A repetition starts from the support position with the arms locked out, descends to depth and
returns to lockout with the body straight throughout; it is counted at the return (NY State Police:
"not counted until you return to the up position"). Depth is judged on the extremes over the
descent (at 20 fps the bottom lasts a few frames): the most bent elbow and the lowest shoulder
relative to its elbow, over the arms that are seen well (the far arm of a side view, MediaPipe's
guess, is left out; from the front both count). The bottom moment in the evidence is the middle of
the frames where the shoulder is lowest above the hands. A climb that turns back down before
lockout ends the attempt as a foul. The body line and knees are judged only when the legs are seen
well enough (a side or 45° view; from the front they are foreshortened to nothing).
"""

from __future__ import annotations

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
    angle_deg,
    best_side,
    distance_px,
    inclination_deg,
    mean_point,
    offset_toward_ground_px,
    point,
    usable_sides,
)
from server.scoring.referee import Alarm, Attempt, ConditionRun, ExerciseScorer, Hold
from server.scoring.rules import PushUpRules

MIN_VISIBILITY = 0.5
"""A joint below this MediaPipe visibility is not judged."""
START_ELBOW_MIN_DEG = 140.0
"""Arms this straight in the support position start the test. The same at every level, so every
level's clocks start together (a stricter level then never ends later); whether each repetition
locks out is judged against the level's own threshold."""
ATTEMPT_ELBOW_MAX_DEG = 125.0
"""Once even the straighter elbow bends below this, a repetition is under way."""
REVERSAL_DEG = 20.0
"""A climb of this much from the bottom that then falls back this much ended the attempt."""
RETURNING_DEG = 15.0
"""The elbow opened this much from its most bent: the examinee is pushing back up."""
BOTTOM_ZONE_ELBOW_DEG = 90.0
"""At or below this elbow angle the examinee is at the bottom (the resting clock runs)."""
BOTTOM_PLATEAU_RATIO = 0.03
"""The bottom is the middle of the frames within this many arm lengths of the lowest shoulder."""
PROGRESS_DEG = 20.0
"""Elbow movement that counts as progress for the pause clock."""
BODY_LINE_SPAN_MIN_RATIO = 1.2
"""Shoulder–ankle must span this many arm lengths for the body line to be judged."""
LEG_SPAN_MIN_RATIO = 0.6
"""Hip–ankle must span this many arm lengths for the knee to be judged."""
TORSO_SPAN_MIN_RATIO = 0.5
"""Shoulder–hip must span this many arm lengths for the torso's slope to be judged."""
KNEE_BENT_MAX_DEG = 150.0
"""A knee bent below this, pointing to the ground, is a knee on the ground."""
UPRIGHT_TORSO_MIN_DEG = 45.0
"""A torso steeper than this is not in the support position (the examinee stood up)."""


@dataclass(frozen=True)
class PushUpFrame:
    """One frame's push-up measurements."""

    extension_deg: float
    """The straighter judged elbow (lockout)."""
    flexion_deg: float
    """The more bent judged elbow (depth)."""
    shoulder_elbow_depth: float
    """How far the lower judged shoulder is below its elbow, in upper-arm lengths."""
    shoulder_height_ratio: float
    """How far the shoulder is above the hands, in arm lengths: the lowest marks the bottom."""
    body_line_deg: float | None
    """Shoulder–hip–ankle (or –knee) angle; None when the legs are not seen well enough."""
    hips_toward_ground: bool
    knee_down: bool
    in_support: bool
    """Hands below the shoulders and the torso not upright."""


def measure_push_up(keypoints: Keypoints) -> PushUpFrame | None:
    """The frame's push-up measurements, or None when no arm can be judged."""
    arms = usable_sides(keypoints, ("shoulder", "elbow", "wrist"), MIN_VISIBILITY)
    if not arms:
        return None
    elbows: list[float] = []
    depths: list[float] = []
    heights: list[float] = []
    arm_lengths: list[float] = []
    hands_low = True
    for side in arms:
        joints = SIDE_JOINTS[side]
        shoulder, elbow, wrist = (point(keypoints, joint) for joint in joints.arm)
        upper_arm_px = distance_px(shoulder, elbow)
        arm_length_px = upper_arm_px + distance_px(elbow, wrist)
        arm_lengths.append(arm_length_px)
        elbows.append(angle_deg(shoulder, elbow, wrist))
        if upper_arm_px > 0.0:
            depths.append((shoulder[1] - elbow[1]) / upper_arm_px)
            heights.append((wrist[1] - shoulder[1]) / arm_length_px)
        hands_low = hands_low and wrist[1] > shoulder[1]
    elbows = [value for value in elbows if value == value]
    if not elbows or not depths:
        return None
    arm_length_px = max(arm_lengths)
    body_line, hips_down = _body_line(keypoints, arm_length_px)
    return PushUpFrame(
        extension_deg=max(elbows),
        flexion_deg=min(elbows),
        shoulder_elbow_depth=max(depths),
        shoulder_height_ratio=min(heights),
        body_line_deg=body_line,
        hips_toward_ground=hips_down,
        knee_down=_knee_down(keypoints, arm_length_px),
        in_support=hands_low and not _torso_upright(keypoints, arm_length_px),
    )


def _body_line(keypoints: Keypoints, arm_length_px: float) -> tuple[float | None, bool]:
    for far_joint, span_ratio in (("ankle", BODY_LINE_SPAN_MIN_RATIO), ("knee", 0.75)):
        side = best_side(keypoints, ("shoulder", "hip", far_joint), MIN_VISIBILITY)
        if side is None:
            continue
        joints = SIDE_JOINTS[side]
        shoulder = point(keypoints, joints.shoulder)
        hip = point(keypoints, joints.hip)
        far = point(keypoints, getattr(joints, far_joint))
        if distance_px(shoulder, far) < span_ratio * arm_length_px:
            return None, False
        offset = offset_toward_ground_px(hip, shoulder, far)
        return angle_deg(shoulder, hip, far), offset > 0.0
    return None, False


def _knee_down(keypoints: Keypoints, arm_length_px: float) -> bool:
    side = best_side(keypoints, ("hip", "knee", "ankle"), MIN_VISIBILITY)
    if side is None:
        return False
    hip, knee, ankle = (point(keypoints, joint) for joint in SIDE_JOINTS[side].leg)
    span_px = distance_px(hip, ankle)
    if span_px < LEG_SPAN_MIN_RATIO * arm_length_px:
        return False
    bent = angle_deg(hip, knee, ankle) <= KNEE_BENT_MAX_DEG
    return bent and offset_toward_ground_px(knee, hip, ankle) > 0.05 * span_px


def _torso_upright(keypoints: Keypoints, arm_length_px: float) -> bool:
    sides = usable_sides(keypoints, ("shoulder", "hip"), MIN_VISIBILITY)
    if not sides:
        return False
    shoulder = mean_point([point(keypoints, SIDE_JOINTS[side].shoulder) for side in sides])
    hip = mean_point([point(keypoints, SIDE_JOINTS[side].hip) for side in sides])
    if distance_px(shoulder, hip) < TORSO_SPAN_MIN_RATIO * arm_length_px:
        return False
    return abs(inclination_deg(hip, shoulder)) > UPRIGHT_TORSO_MIN_DEG


class PushUpScorer(ExerciseScorer[PushUpFrame]):
    """The push-up state machine: WAITING → UP ⇄ DOWN → BOTTOM → RETURNING → UP.

    Every decision reads a signal held over two frames (:class:`Hold`), so one glitched frame can
    neither start, end nor deepen a repetition.
    """

    exercise = Exercise.PUSH_UP

    def __init__(self, rules: PushUpRules, level: int) -> None:
        super().__init__(
            level=level, not_visible_warning_s=rules.not_visible_warning_s, leave_s=rules.leave_s
        )
        self.rules = rules
        self._extension = Hold()
        self._flexion = Hold()
        self._depth = Hold()
        self._height = Hold()
        self._hold_since_s: float | None = None
        self._top: tuple[int, float] = (0, 0.0)
        self._attempt: Attempt | None = None
        self._peak_after_bottom_deg = 0.0
        self._sag = ConditionRun()
        self._raise = ConditionRun()
        self._progress_anchor_deg = 0.0
        self._pause = Alarm(rules.pause_warning_s, rules.pause_s)
        self._rest = Alarm(rules.rest_warning_s, rules.rest_s)
        self._knee = Alarm(rules.knee_down_warning_s, rules.knee_down_s)
        self._out_of_position = Alarm(rules.leave_s, rules.leave_s)

    def _measure(self, keypoints: Keypoints) -> PushUpFrame | None:
        return measure_push_up(keypoints)

    def _judge(self, frame_index: int, time_s: float, measure: PushUpFrame) -> list[ScoringEvent]:
        self._extension.update(measure.extension_deg)
        self._flexion.update(measure.flexion_deg)
        self._depth.update(measure.shoulder_elbow_depth)
        self._height.update(measure.shoulder_height_ratio)
        if self._phase is Phase.WAITING:
            self._wait_for_start(frame_index, time_s, measure)
            return []
        events = self._watch_violations(time_s, measure)
        if self._finished:
            return events
        if self._attempt is None:
            self._at_top(frame_index, time_s, measure)
        else:
            events.extend(self._in_attempt(self._attempt, frame_index, time_s, measure))
        return events

    def _locked_out(self) -> bool:
        return self._extension.at_least >= self.rules.lockout_elbow_min_deg

    def _wait_for_start(self, frame_index: int, time_s: float, measure: PushUpFrame) -> None:
        if not (measure.in_support and self._extension.at_least >= START_ELBOW_MIN_DEG):
            self._hold_since_s = None
            return
        if self._hold_since_s is None:
            self._hold_since_s = time_s
        if time_s - self._hold_since_s >= self.rules.start_hold_s:
            self._phase = Phase.UP
            self._top = (frame_index, time_s)
            self._progress_anchor_deg = measure.extension_deg

    def _watch_violations(self, time_s: float, measure: PushUpFrame) -> list[ScoringEvent]:
        """The clocks that end the test; the first violation stops the others."""
        at_bottom = self._flexion.at_most <= BOTTOM_ZONE_ELBOW_DEG
        if abs(measure.extension_deg - self._progress_anchor_deg) >= PROGRESS_DEG:
            self._progress_anchor_deg = measure.extension_deg
            self._pause.restart()
        watches = (
            (
                self._out_of_position,
                not measure.in_support,
                None,
                ViolationCode.LEFT_POSITION,
                "out of the support position",
            ),
            (
                self._knee,
                measure.knee_down,
                WarningCode.RESTING,
                ViolationCode.KNEE_DOWN,
                "knee on the ground",
            ),
            (
                self._rest,
                at_bottom,
                WarningCode.RESTING,
                ViolationCode.RESTING,
                "resting at the bottom",
            ),
            (
                self._pause,
                not at_bottom,
                WarningCode.PAUSE,
                ViolationCode.PAUSE_TOO_LONG,
                "no movement",
            ),
        )
        events: list[ScoringEvent] = []
        for alarm, active, warning_code, violation_code, detail in watches:
            warning = None if warning_code is None else (warning_code, detail)
            events += self._watch(alarm, active, time_s, warning, (violation_code, detail))
            if self._finished:
                break
        return events

    def _at_top(self, frame_index: int, time_s: float, measure: PushUpFrame) -> None:
        if self._locked_out():
            self._top = (frame_index, time_s)
        if self._extension.at_most < ATTEMPT_ELBOW_MAX_DEG:
            self._begin_attempt(*self._top)
            self._track(frame_index, time_s, measure)

    def _begin_attempt(self, frame_index: int, time_s: float) -> None:
        self._attempt = Attempt(frame_index, time_s, BOTTOM_PLATEAU_RATIO)
        self._peak_after_bottom_deg = 0.0
        self._sag = ConditionRun()
        self._raise = ConditionRun()
        self._phase = Phase.DOWN

    def _track(self, frame_index: int, time_s: float, measure: PushUpFrame) -> Attempt:
        attempt = self._attempt
        assert attempt is not None
        if attempt.keep_min("min_elbow_angle_deg", self._flexion.at_most):
            self._peak_after_bottom_deg = self._extension.at_least
        attempt.keep_min("min_shoulder_height_ratio", self._height.at_most)
        attempt.track_depth(frame_index, time_s, -self._height.at_most)
        attempt.keep_max("shoulder_elbow_depth", self._depth.at_least)
        attempt.keep_min("min_body_line_angle_deg", measure.body_line_deg)
        self._peak_after_bottom_deg = max(self._peak_after_bottom_deg, self._extension.at_least)
        line_broken = (
            measure.body_line_deg is not None
            and measure.body_line_deg < self.rules.body_line_min_deg
        )
        self._sag.update(line_broken and measure.hips_toward_ground, self._frame_period_s)
        self._raise.update(line_broken and not measure.hips_toward_ground, self._frame_period_s)
        deepest_deg = attempt.measures["min_elbow_angle_deg"]
        if self._flexion.at_least >= deepest_deg + RETURNING_DEG:
            self._phase = Phase.RETURNING
        elif self._flexion.at_most <= BOTTOM_ZONE_ELBOW_DEG:
            self._phase = Phase.BOTTOM
        return attempt

    def _in_attempt(
        self, attempt: Attempt, frame_index: int, time_s: float, measure: PushUpFrame
    ) -> list[ScoringEvent]:
        self._track(frame_index, time_s, measure)
        if self._locked_out():
            attempt.set("lockout_elbow_angle_deg", self._extension.at_least)
            event = self._judged(
                self._faults(attempt, locked_out=True), attempt, frame_index, time_s
            )
            self._attempt = None
            self._phase = Phase.UP
            self._top = (frame_index, time_s)
            return [event]
        deepest_deg = attempt.measures["min_elbow_angle_deg"]
        peak_deg = self._peak_after_bottom_deg
        if (
            peak_deg >= deepest_deg + REVERSAL_DEG
            and self._extension.at_most <= peak_deg - REVERSAL_DEG
        ):
            attempt.set("lockout_elbow_angle_deg", peak_deg)
            event = self._judged(
                self._faults(attempt, locked_out=False), attempt, frame_index, time_s
            )
            self._begin_attempt(frame_index, time_s)
            self._track(frame_index, time_s, measure)
            return [event]
        return []

    def _faults(self, attempt: Attempt, *, locked_out: bool) -> list[tuple[FoulCode, str]]:
        rules = self.rules
        faults: list[tuple[FoulCode, str]] = []
        elbow = attempt.measures["min_elbow_angle_deg"]
        depth = attempt.measures.get("shoulder_elbow_depth", float("-inf"))
        if elbow > rules.depth_elbow_max_deg or depth < rules.depth_shoulder_elbow_min:
            faults.append(
                (
                    FoulCode.NOT_LOW_ENOUGH,
                    f"elbow reached {elbow:.0f}° (needs ≤ {rules.depth_elbow_max_deg:.0f}°),"
                    f" shoulder {depth:+.2f} upper arms below the elbow"
                    f" (needs ≥ {rules.depth_shoulder_elbow_min:+.2f})",
                )
            )
        if not locked_out:
            lockout = attempt.measures["lockout_elbow_angle_deg"]
            faults.append(
                (
                    FoulCode.ARMS_NOT_EXTENDED,
                    f"arms straightened to {lockout:.0f}°"
                    f" (needs ≥ {rules.lockout_elbow_min_deg:.0f}°)",
                )
            )
        line = attempt.measures.get("min_body_line_angle_deg")
        for run, code, word in (
            (self._sag, FoulCode.HIPS_SAGGING, "sagged"),
            (self._raise, FoulCode.HIPS_RAISED, "raised"),
        ):
            if line is not None and run.exceeds(rules.body_line_tolerance_s):
                faults.append(
                    (
                        code,
                        f"hips {word}: body line {line:.0f}° for {run.longest_s:.2f} s"
                        f" (needs ≥ {rules.body_line_min_deg:.0f}°)",
                    )
                )
        return faults

    def _finish_attempt(self, time_s: float) -> list[ScoringEvent]:
        if self._attempt is None:
            return []
        detail = "the assessment ended during a repetition"
        frame_index = self.last_frame_index
        return [self._foul(FoulCode.PARTIAL_AT_END, detail, self._attempt, frame_index, time_s)]
