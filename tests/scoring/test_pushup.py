"""Push-up judging on synthetic keypoints: counting, every foul and violation, gating."""

from __future__ import annotations

import dataclasses

import pytest

from server.scoring import Exercise, FoulCode, Phase, ViolationCode, WarningCode, create_scorer
from server.scoring.geometry import Landmark
from tests.scoring.bodies import TOP, PushUpPose, hold, push_up_reps, render_push_up, stay
from tests.scoring.kinematics import Camera, Frame, Move, frames, hide
from tests.scoring.runs import SHIPPED_RULES, run

PUSH_UP = Exercise.PUSH_UP


def script(
    *moves: Move[PushUpPose], camera: Camera | None = None, fps: float = 20.0
) -> list[Frame]:
    return frames(TOP, [hold(0.5), *moves], render_push_up, camera, fps)


@pytest.mark.parametrize("yaw_deg", [0.0, 45.0, 90.0, 180.0, 315.0])
def test_clean_reps_count_from_side_oblique_and_front_views(yaw_deg: float) -> None:
    outcome = run(PUSH_UP, script(*push_up_reps(3), camera=Camera(yaw_deg=yaw_deg)))
    assert outcome.rep_count == 3
    assert outcome.fouls == []
    assert outcome.violation is None


def test_evidence_carries_frames_and_the_measures_that_decided() -> None:
    outcome = run(PUSH_UP, script(*push_up_reps(2)))
    first, second = outcome.reps
    assert (first.rep_count, second.rep_count) == (1, 2)
    evidence = first.evidence
    assert evidence.rep_index == 1
    assert evidence.start_frame < evidence.bottom_frame < evidence.end_frame
    assert evidence.start_time_s < evidence.bottom_time_s < evidence.end_time_s
    # the script's first bottom is held from 1.1 s to 1.2 s
    assert 1.05 <= evidence.bottom_time_s <= 1.25
    measures = evidence.measures
    assert measures["min_elbow_angle_deg"] < 65.0
    assert measures["lockout_elbow_angle_deg"] >= 155.0
    assert measures["min_body_line_angle_deg"] > 175.0
    assert measures["shoulder_elbow_depth"] > 0.3


def test_nothing_counts_before_the_support_position_with_locked_arms() -> None:
    start = PushUpPose(elbow_deg=70.0)
    moves = [Move(0.5, start), Move(0.6, TOP), Move(0.4, TOP), *push_up_reps(1)]
    outcome = run(PUSH_UP, frames(start, moves, render_push_up))
    assert outcome.rep_count == 1


def test_the_scorer_reports_its_phase() -> None:
    scorer = create_scorer(PUSH_UP, 5, SHIPPED_RULES)
    phases = []
    for frame in script(*push_up_reps(1)):
        scorer.update(frame.index, frame.time_s, frame.keypoints)
        phases.append(scorer.phase)
    assert phases[0] is Phase.WAITING
    order = [
        phase for index, phase in enumerate(phases) if index == 0 or phases[index - 1] != phase
    ]
    assert order == [Phase.WAITING, Phase.UP, Phase.DOWN, Phase.BOTTOM, Phase.RETURNING, Phase.UP]


FOULS = [
    pytest.param(
        push_up_reps(1, depth_deg=105.0), FoulCode.NOT_LOW_ENOUGH, id="elbow-not-bent-enough"
    ),
    pytest.param(
        push_up_reps(1, depth_deg=80.0, bottom=PushUpPose(forearm_tilt_deg=35.0)),
        FoulCode.NOT_LOW_ENOUGH,
        id="elbow-bent-but-shoulder-above-elbow",
    ),
    pytest.param(
        push_up_reps(1, depth_deg=100.0, bottom=PushUpPose(forearm_tilt_deg=-30.0)),
        FoulCode.NOT_LOW_ENOUGH,
        id="shoulder-below-elbow-but-elbow-open",
    ),
    pytest.param(
        push_up_reps(1, bottom=PushUpPose(hip_offset_cm=20.0)), FoulCode.HIPS_SAGGING, id="hips-sag"
    ),
    pytest.param(
        push_up_reps(1, bottom=PushUpPose(hip_offset_cm=-20.0)),
        FoulCode.HIPS_RAISED,
        id="hips-raised",
    ),
]


@pytest.mark.parametrize(("faulty", "code"), FOULS)
def test_each_form_fault_is_a_foul_and_the_test_goes_on(
    faulty: list[Move[PushUpPose]], code: FoulCode
) -> None:
    outcome = run(PUSH_UP, script(*push_up_reps(1), *faulty, *push_up_reps(1)))
    assert outcome.rep_count == 2
    assert outcome.foul_codes == [code]
    foul = outcome.fouls[0]
    assert foul.evidence.rep_index == 2
    assert foul.detail
    assert outcome.violation is None


def test_the_two_depth_halves_really_are_measured_apart() -> None:
    # The FOULS cases above rely on the generator decoupling elbow angle and shoulder height.
    tilted = push_up_reps(1, depth_deg=80.0, bottom=PushUpPose(forearm_tilt_deg=35.0))
    outcome = run(PUSH_UP, script(*tilted))
    assert outcome.fouls[0].evidence.measures["min_elbow_angle_deg"] <= 90.0
    assert outcome.fouls[0].evidence.measures["shoulder_elbow_depth"] < 0.0
    tilted = push_up_reps(1, depth_deg=100.0, bottom=PushUpPose(forearm_tilt_deg=-30.0))
    outcome = run(PUSH_UP, script(*tilted))
    assert outcome.fouls[0].evidence.measures["min_elbow_angle_deg"] > 90.0
    assert outcome.fouls[0].evidence.measures["shoulder_elbow_depth"] >= 0.0


def test_arms_not_extended_between_reps_is_a_foul() -> None:
    half = [
        Move(0.6, PushUpPose(elbow_deg=60.0)),
        Move(0.5, PushUpPose(elbow_deg=135.0)),
        Move(0.6, PushUpPose(elbow_deg=60.0)),
        Move(0.6, TOP),
        hold(0.4),
    ]
    outcome = run(PUSH_UP, script(*half))
    assert outcome.foul_codes == [FoulCode.ARMS_NOT_EXTENDED]
    assert outcome.fouls[0].evidence.measures["lockout_elbow_angle_deg"] < 155.0
    assert outcome.rep_count == 1


@pytest.mark.parametrize("fps", [20.0, 8.0])
def test_a_single_frame_of_broken_body_line_is_tolerated(fps: float) -> None:
    clean = script(*push_up_reps(1), fps=fps)
    sagging = script(*push_up_reps(1, bottom=PushUpPose(hip_offset_cm=20.0)), fps=fps)
    bottom = max(index for index, frame in enumerate(clean) if frame.time_s <= 1.15)
    glitched = [*clean[:bottom], sagging[bottom], *clean[bottom + 1 :]]
    assert run(PUSH_UP, glitched).rep_count == 1
    two_frames = [*clean[:bottom], *sagging[bottom : bottom + 2], *clean[bottom + 2 :]]
    assert run(PUSH_UP, two_frames).foul_codes == [FoulCode.HIPS_SAGGING]


def test_a_one_frame_glitch_never_counts_a_rep() -> None:
    still = script(hold(2.0))
    glitch = script(Move(0.0, PushUpPose(elbow_deg=50.0)))[-1].keypoints
    glitched = [
        Frame(frame.index, frame.time_s, glitch if frame.index == 20 else frame.keypoints)
        for frame in still
    ]
    outcome = run(PUSH_UP, glitched)
    assert outcome.rep_count == 0
    assert outcome.fouls == []


VIOLATIONS = [
    pytest.param(
        stay(PushUpPose(knee_deg=110.0), 1.0), ViolationCode.KNEE_DOWN, 0.5, id="knee-down"
    ),
    pytest.param(
        stay(PushUpPose(elbow_deg=60.0), 3.0),
        ViolationCode.RESTING,
        2.0,
        id="resting-at-the-bottom",
    ),
    pytest.param([hold(6.0)], ViolationCode.PAUSE_TOO_LONG, 5.0, id="pause-at-the-top"),
    pytest.param(
        stay(PushUpPose(elbow_deg=120.0), 6.0),
        ViolationCode.PAUSE_TOO_LONG,
        5.0,
        id="pause-halfway",
    ),
    pytest.param(
        stay(dataclasses.replace(TOP, present=False), 4.0),
        ViolationCode.LEFT_POSITION,
        3.0,
        id="no-person",
    ),
    pytest.param(
        stay(dataclasses.replace(TOP, standing=True), 4.0),
        ViolationCode.LEFT_POSITION,
        3.0,
        id="stood-up",
    ),
]


@pytest.mark.parametrize(("moves", "code", "after_s"), VIOLATIONS)
def test_each_violation_ends_the_test(
    moves: list[Move[PushUpPose]], code: ViolationCode, after_s: float
) -> None:
    first_rep_s = 0.5 + 1.8
    outcome = run(PUSH_UP, script(*push_up_reps(1), *moves, *push_up_reps(2)))
    violation = outcome.violation
    assert violation is not None
    assert violation.code is code
    # the clock starts when the condition begins: on the way into the pose, or at the last top
    assert first_rep_s + after_s - 1.0 <= violation.time_s <= first_rep_s + after_s + 0.5
    assert outcome.rep_count == 1
    assert outcome.events[-1] is violation


def test_a_pause_is_warned_before_it_ends_the_test() -> None:
    outcome = run(PUSH_UP, script(hold(6.0)))
    assert outcome.warning_codes == [WarningCode.PAUSE]
    assert outcome.warnings[0].time_s < outcome.violation.time_s  # type: ignore[union-attr]
    assert outcome.violation_code is ViolationCode.PAUSE_TOO_LONG


def test_a_short_absence_is_only_a_warning() -> None:
    away = dataclasses.replace(TOP, present=False)
    outcome = run(PUSH_UP, script(*push_up_reps(1), *stay(away, 1.3), hold(0.5), *push_up_reps(1)))
    assert outcome.warning_codes == [WarningCode.PERSON_NOT_VISIBLE]
    assert outcome.violation is None
    assert outcome.rep_count == 2


def test_lenient_levels_warn_before_a_knee_down_ends_the_test() -> None:
    knee = PushUpPose(knee_deg=110.0)
    outcome = run(PUSH_UP, script(*stay(knee, 4.0)), level=1)
    assert outcome.warning_codes == [WarningCode.RESTING]
    assert outcome.violation_code is ViolationCode.KNEE_DOWN


def test_a_rep_in_progress_at_the_end_is_partial() -> None:
    moves = [
        *push_up_reps(1),
        Move(0.6, PushUpPose(elbow_deg=60.0)),
        Move(0.3, PushUpPose(elbow_deg=120.0)),
    ]
    outcome = run(PUSH_UP, script(*moves))
    assert outcome.rep_count == 1
    assert outcome.foul_codes == [FoulCode.PARTIAL_AT_END]


def test_after_a_violation_or_finish_the_scorer_takes_no_more_frames() -> None:
    scorer = create_scorer(PUSH_UP, 5, SHIPPED_RULES)
    frames_ = script(hold(6.0), *push_up_reps(1))
    for frame in frames_:
        scorer.update(frame.index, frame.time_s, frame.keypoints)
    assert scorer.finished
    assert scorer.violation is not None
    assert scorer.rep_count == 0
    assert scorer.finish(frames_[-1].time_s) == []


def test_hidden_elbows_hold_the_state_instead_of_guessing() -> None:
    elbows = [Landmark.LEFT_ELBOW, Landmark.RIGHT_ELBOW]
    clean = script(*push_up_reps(2))
    blind = hide(clean, elbows, 1.5, 1.8)
    assert run(PUSH_UP, blind).rep_count == 2


def test_the_poorly_seen_far_arm_is_not_judged() -> None:
    clean = script(*push_up_reps(1), camera=Camera(yaw_deg=0.0))
    near = [Landmark.LEFT_SHOULDER, Landmark.LEFT_ELBOW, Landmark.LEFT_WRIST]
    assert run(PUSH_UP, hide(clean, near, 0.0, 10.0)).rep_count == 0


def test_a_lenient_level_counts_what_level_five_fouls() -> None:
    shallow = script(*push_up_reps(2, depth_deg=100.0))
    assert run(PUSH_UP, shallow, level=5).foul_codes == [FoulCode.NOT_LOW_ENOUGH] * 2
    assert run(PUSH_UP, shallow, level=1).rep_count == 2


def test_skipped_frames_do_not_break_a_rep() -> None:
    sparse = script(*push_up_reps(3), fps=8.0)
    assert run(PUSH_UP, sparse).rep_count == 3
