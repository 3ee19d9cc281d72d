"""Sit-up judging on synthetic keypoints: counting, every foul and violation."""

from __future__ import annotations

import dataclasses

import pytest

from server.scoring import Exercise, FoulCode, ViolationCode, WarningCode
from server.scoring.rules import HandPosition
from server.scoring.situp import measure_sit_up
from tests.scoring.bodies import LYING, SitUpPose, render_sit_up, sit_up_joints, sit_up_reps
from tests.scoring.kinematics import Camera, Frame, Move, frames, project
from tests.scoring.runs import SHIPPED_RULES, run

SIT_UP = Exercise.SIT_UP


def script(*moves: Move[SitUpPose], fps: float = 20.0) -> list[Frame]:
    return frames(LYING, [Move(0.5, LYING), *moves], render_sit_up, fps=fps)


def stay(pose: SitUpPose, duration_s: float) -> list[Move[SitUpPose]]:
    return [Move(0.2, pose), Move(duration_s, pose)]


def test_clean_sit_ups_count_at_the_top_with_evidence() -> None:
    outcome = run(SIT_UP, script(*sit_up_reps(3)))
    assert outcome.rep_count == 3
    assert outcome.fouls == []
    evidence = outcome.reps[0].evidence
    # the first top is held from 1.3 s to 1.6 s: its middle is the rep's far end
    assert 1.3 <= evidence.bottom_time_s <= 1.6
    assert evidence.measures["min_hip_angle_deg"] < 70.0
    assert evidence.start_time_s < evidence.bottom_time_s < evidence.end_time_s


FOULS = [
    pytest.param(sit_up_reps(1, top_deg=50.0), FoulCode.NOT_UP, id="not-up"),
    pytest.param(
        sit_up_reps(1, top=SitUpPose(hands_forward=1.0)),
        FoulCode.HANDS_OFF_HEAD,
        id="hands-off-head",
    ),
    pytest.param(
        sit_up_reps(1, top_deg=95.0, top=SitUpPose(hip_lift_cm=15.0)),
        FoulCode.HIPS_LIFTED,
        id="hips-lifted",
    ),
]


@pytest.mark.parametrize(("faulty", "code"), FOULS)
def test_each_form_fault_is_a_foul_and_the_test_goes_on(
    faulty: list[Move[SitUpPose]], code: FoulCode
) -> None:
    outcome = run(SIT_UP, script(*sit_up_reps(1), *faulty, *sit_up_reps(1)))
    assert outcome.rep_count == 2
    assert outcome.foul_codes == [code]
    assert outcome.fouls[0].evidence.rep_index == 2
    assert outcome.violation is None


def test_not_lying_back_down_fouls_the_next_sit_up() -> None:
    half_way_back = [
        *sit_up_reps(1, bottom_deg=40.0),
        Move(0.8, SitUpPose(torso_deg=85.0)),
        Move(0.3, SitUpPose(torso_deg=85.0)),
        Move(0.8, LYING),
        Move(0.3, LYING),
    ]
    outcome = run(SIT_UP, script(*half_way_back, *sit_up_reps(1)))
    assert outcome.foul_codes == [FoulCode.NOT_DOWN]
    assert outcome.rep_count == 2


def test_hands_hidden_behind_the_head_are_not_judged_as_off() -> None:
    keypoints = project(sit_up_joints(SitUpPose(torso_deg=85.0)), Camera())
    assert measure_sit_up(keypoints, HandPosition.BEHIND_HEAD) is not None
    outcome = run(SIT_UP, script(*sit_up_reps(2)))
    assert FoulCode.HANDS_OFF_HEAD not in outcome.foul_codes


def test_hands_on_the_chest_style_judges_the_shoulders() -> None:
    reaching = project(sit_up_joints(SitUpPose(torso_deg=85.0, hands_forward=1.0)), Camera())
    for style in HandPosition:
        measure = measure_sit_up(reaching, style)
        assert measure is not None
        assert measure.hand_distance_ratio is not None
        assert measure.hand_distance_ratio > 0.5


def test_lying_still_too_long_is_resting() -> None:
    outcome = run(SIT_UP, script(*sit_up_reps(1), Move(6.0, LYING), *sit_up_reps(1)))
    assert outcome.warning_codes == [WarningCode.RESTING]
    assert outcome.violation_code is ViolationCode.RESTING
    assert outcome.rep_count == 1


def test_resting_is_off_at_level_one() -> None:
    outcome = run(SIT_UP, script(*sit_up_reps(1), Move(12.0, LYING), *sit_up_reps(1)), level=1)
    assert outcome.violation is None
    assert outcome.rep_count == 2


def test_leaving_ends_the_test() -> None:
    away = dataclasses.replace(LYING, present=False)
    outcome = run(SIT_UP, script(*sit_up_reps(1), *stay(away, 4.0), *sit_up_reps(1)))
    assert outcome.violation_code is ViolationCode.LEFT_POSITION
    assert outcome.warning_codes == [WarningCode.PERSON_NOT_VISIBLE]


def test_the_end_during_a_rise_is_partial_but_at_the_top_it_counts() -> None:
    rising = run(SIT_UP, script(*sit_up_reps(1), Move(0.4, SitUpPose(torso_deg=40.0))))
    assert rising.rep_count == 1
    assert rising.foul_codes == [FoulCode.PARTIAL_AT_END]
    sitting = run(SIT_UP, script(*sit_up_reps(1), *stay(SitUpPose(torso_deg=85.0), 0.5)))
    assert sitting.rep_count == 2
    assert sitting.fouls == []


def test_a_lenient_level_counts_a_shallower_sit_up() -> None:
    shallow = script(*sit_up_reps(2, top_deg=55.0))
    assert run(SIT_UP, shallow, level=5).foul_codes == [FoulCode.NOT_UP] * 2
    assert run(SIT_UP, shallow, level=1).rep_count == 2


def test_skipped_frames_do_not_break_a_rep() -> None:
    assert run(SIT_UP, script(*sit_up_reps(3), fps=8.0)).rep_count == 3


def test_hip_lift_tolerance_comes_from_the_rules() -> None:
    lifted = script(*sit_up_reps(1, top=SitUpPose(hip_lift_cm=6.0)))
    assert run(SIT_UP, lifted, level=5).foul_codes == []
    strict = dataclasses.replace(SHIPPED_RULES.sit_up[4], hip_lift_max_ratio=0.05)
    rules = dataclasses.replace(SHIPPED_RULES, sit_up=(*SHIPPED_RULES.sit_up[:4], strict))
    assert run(SIT_UP, lifted, level=5, rules=rules).foul_codes == [FoulCode.HIPS_LIFTED]


def test_a_rise_reaching_the_level_top_counts_even_below_the_rising_line() -> None:
    # Level 1 takes a torso above 50° as a rise, but its top (hip angle ≤ 100°) comes at about 40°:
    # reaching the top must start the attempt, or level 1 would count less than level 2.
    shallow = script(*sit_up_reps(2, top_deg=48.0))
    counts = [run(SIT_UP, shallow, level).rep_count for level in (1, 2, 3)]
    assert counts == [2, 2, 0]
