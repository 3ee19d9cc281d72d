"""The shared 2D geometry: angles, slopes, which side of a line, which side of the body."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.scoring.geometry import (
    Landmark,
    Side,
    angle_deg,
    best_side,
    inclination_deg,
    offset_toward_ground_px,
    person_present,
    usable_sides,
)

ANGLES = [
    pytest.param((0.0, -1.0), (0.0, 0.0), (0.0, 1.0), 180.0, id="straight"),
    pytest.param((1.0, 0.0), (0.0, 0.0), (0.0, 1.0), 90.0, id="right-angle"),
    pytest.param((1.0, 0.0), (0.0, 0.0), (1.0, 1.0), 45.0, id="forty-five"),
    pytest.param((1.0, 0.0), (0.0, 0.0), (2.0, 0.0), 0.0, id="folded"),
]


@pytest.mark.parametrize(("a", "vertex", "c", "expected"), ANGLES)
def test_angle_at_the_vertex(
    a: tuple[float, float], vertex: tuple[float, float], c: tuple[float, float], expected: float
) -> None:
    assert angle_deg(a, vertex, c) == pytest.approx(expected, abs=1e-6)


def test_a_zero_length_segment_has_no_angle() -> None:
    assert math.isnan(angle_deg((0.0, 0.0), (0.0, 0.0), (1.0, 0.0)))


def test_inclination_is_measured_upwards_in_an_image_whose_y_grows_down() -> None:
    assert inclination_deg((0.0, 100.0), (100.0, 100.0)) == pytest.approx(0.0)
    assert inclination_deg((0.0, 100.0), (0.0, 0.0)) == pytest.approx(90.0)
    assert inclination_deg((0.0, 100.0), (-100.0, 0.0)) == pytest.approx(45.0)
    assert inclination_deg((0.0, 0.0), (100.0, 100.0)) == pytest.approx(-45.0)


def test_offset_toward_ground_is_positive_below_the_line_whichever_way_it_runs() -> None:
    below = (50.0, 110.0)
    for start, end in (((0.0, 100.0), (100.0, 100.0)), ((100.0, 100.0), (0.0, 100.0))):
        assert offset_toward_ground_px(below, start, end) == pytest.approx(10.0)
        assert offset_toward_ground_px((50.0, 90.0), start, end) == pytest.approx(-10.0)


def _keypoints(visible: dict[Landmark, float]) -> np.ndarray:
    keypoints = np.zeros((33, 5), dtype=np.float32)
    keypoints[:, 0] = np.arange(33) * 10.0
    keypoints[:, 1] = np.arange(33) * 5.0
    for landmark, value in visible.items():
        keypoints[landmark, 3] = value
    return keypoints


ARM = ("shoulder", "elbow", "wrist")


def test_a_side_seen_much_worse_than_the_other_is_not_judged() -> None:
    left = {Landmark.LEFT_SHOULDER: 1.0, Landmark.LEFT_ELBOW: 1.0, Landmark.LEFT_WRIST: 1.0}
    right_poor = {
        Landmark.RIGHT_SHOULDER: 0.9,
        Landmark.RIGHT_ELBOW: 0.55,
        Landmark.RIGHT_WRIST: 0.55,
    }
    right_good = {
        Landmark.RIGHT_SHOULDER: 1.0,
        Landmark.RIGHT_ELBOW: 0.9,
        Landmark.RIGHT_WRIST: 0.9,
    }
    assert usable_sides(_keypoints({**left, **right_poor}), ARM, 0.5) == (Side.LEFT,)
    assert usable_sides(_keypoints({**left, **right_good}), ARM, 0.5) == (Side.LEFT, Side.RIGHT)
    assert best_side(_keypoints({**left, **right_good}), ARM, 0.5) is Side.LEFT
    assert usable_sides(_keypoints({}), ARM, 0.5) == ()


def test_a_missing_coordinate_counts_as_not_visible() -> None:
    keypoints = _keypoints({Landmark.LEFT_SHOULDER: 1.0, Landmark.LEFT_HIP: 1.0})
    assert person_present(keypoints, 0.5)
    keypoints[Landmark.LEFT_SHOULDER, 0] = np.nan
    assert not person_present(keypoints, 0.5)
    assert not person_present(None, 0.5)
