"""Properties over generated movement: levels never invert, pixel noise never changes a count."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.scoring import LEVELS, Exercise
from tests.scoring.bodies import (
    FRONT,
    HANG,
    LYING,
    TOP,
    PullUpPose,
    PushUpPose,
    SitUpPose,
    pull_up_reps,
    push_up_reps,
    render_pull_up,
    render_push_up,
    render_sit_up,
    sit_up_reps,
)
from tests.scoring.kinematics import Camera, Keypoints, Move, frames
from tests.scoring.runs import run

Pose = TypeVar("Pose")
PROPERTY_SETTINGS = settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

durations = st.floats(min_value=0.05, max_value=2.0)
PROPERTY_FPS = 12.0
yaws = st.sampled_from([0.0, 45.0, 90.0, 200.0])

push_up_poses = st.builds(
    PushUpPose,
    elbow_deg=st.floats(min_value=35.0, max_value=180.0),
    forearm_tilt_deg=st.floats(min_value=-35.0, max_value=35.0),
    hip_offset_cm=st.floats(min_value=-25.0, max_value=25.0),
    knee_deg=st.sampled_from([180.0, 180.0, 170.0, 120.0]),
    present=st.sampled_from([True] * 9 + [False]),
    standing=st.sampled_from([False] * 19 + [True]),
)
sit_up_poses = st.builds(
    SitUpPose,
    torso_deg=st.floats(min_value=-5.0, max_value=100.0),
    hip_lift_cm=st.sampled_from([0.0, 0.0, 4.0, 12.0]),
    hands_forward=st.sampled_from([0.0, 0.0, 0.0, 1.0]),
    present=st.sampled_from([True] * 9 + [False]),
)
pull_up_poses = st.builds(
    PullUpPose,
    elbow_deg=st.floats(min_value=15.0, max_value=180.0),
    sway_cm=st.floats(min_value=-25.0, max_value=25.0),
    on_bar=st.sampled_from([True] * 19 + [False]),
    present=st.sampled_from([True] * 9 + [False]),
)


def scripts(poses: st.SearchStrategy[Pose]) -> st.SearchStrategy[list[Move[Pose]]]:
    moves = st.builds(Move, duration_s=durations, target=poses)
    return st.lists(moves, min_size=2, max_size=10)


def counts_by_level(
    exercise: Exercise,
    start: Pose,
    moves: list[Move[Pose]],
    render: Callable[[Pose, Camera], Keypoints | None],
    camera: Camera,
) -> list[int]:
    sampled = frames(start, [Move(0.5, start), *moves], render, camera, PROPERTY_FPS)
    return [run(exercise, sampled, level).rep_count for level in LEVELS]


def assert_never_more_at_a_stricter_level(counts: list[int]) -> None:
    for easier, harder in itertools.pairwise(counts):
        assert harder <= easier, f"counts by level 1..5: {counts}"


@PROPERTY_SETTINGS
@given(moves=scripts(push_up_poses), yaw_deg=yaws)
def test_push_up_stricter_level_never_counts_more(
    moves: list[Move[PushUpPose]], yaw_deg: float
) -> None:
    camera = Camera(yaw_deg=yaw_deg)
    assert_never_more_at_a_stricter_level(
        counts_by_level(Exercise.PUSH_UP, TOP, moves, render_push_up, camera)
    )


@PROPERTY_SETTINGS
@given(moves=scripts(sit_up_poses))
def test_sit_up_stricter_level_never_counts_more(moves: list[Move[SitUpPose]]) -> None:
    assert_never_more_at_a_stricter_level(
        counts_by_level(Exercise.SIT_UP, LYING, moves, render_sit_up, Camera())
    )


@PROPERTY_SETTINGS
@given(moves=scripts(pull_up_poses), yaw_deg=st.sampled_from([90.0, 270.0, 0.0]))
def test_pull_up_stricter_level_never_counts_more(
    moves: list[Move[PullUpPose]], yaw_deg: float
) -> None:
    camera = Camera(yaw_deg=yaw_deg)
    assert_never_more_at_a_stricter_level(
        counts_by_level(Exercise.PULL_UP, HANG, moves, render_pull_up, camera)
    )


CLEAN: dict[Exercise, tuple[Any, Callable[..., list[Any]], Any, Camera]] = {
    Exercise.PUSH_UP: (TOP, push_up_reps, render_push_up, Camera(yaw_deg=0.0)),
    Exercise.SIT_UP: (LYING, sit_up_reps, render_sit_up, Camera(yaw_deg=0.0)),
    Exercise.PULL_UP: (HANG, pull_up_reps, render_pull_up, FRONT),
}


@settings(max_examples=300, deadline=None)
@given(
    exercise=st.sampled_from(list(Exercise)),
    count=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**16),
    yaw_offset_deg=st.sampled_from([0.0, 30.0]),
    level=st.sampled_from(LEVELS),
)
def test_two_pixels_of_noise_never_change_the_count_of_clean_reps(
    exercise: Exercise, count: int, seed: int, yaw_offset_deg: float, level: int
) -> None:
    start, reps, render, camera = CLEAN[exercise]
    moves = [Move(0.5, start), *reps(count)]
    yaw = camera.yaw_deg + (yaw_offset_deg if exercise is Exercise.PUSH_UP else 0.0)
    noisy = Camera(yaw_deg=yaw, noise_px=2.0, seed=seed)
    assert run(exercise, frames(start, moves, render, noisy), level).rep_count == count
    assert (
        run(exercise, frames(start, moves, render, Camera(yaw_deg=yaw)), level).rep_count == count
    )
