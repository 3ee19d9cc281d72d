"""2D geometry on BlazePose landmarks, shared by the exercise scorers.

Keypoints are one person's 33×5 array: x_px, y_px, z, visibility, presence; image y grows
downward. Only x, y and visibility are used: z is too noisy to judge angles with, and MediaPipe's
Python API clears presence. A landmark with a NaN coordinate counts as not visible.

Angles are measured in the image plane. A straight limb projects to a straight line from any
view, so lockout and body-line angles hold at 45° and from the front; a bent limb's angle depends
on the view, which is why the rules file's thresholds are on these measured angles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

import numpy as np
from numpy.typing import NDArray

Keypoints = NDArray[np.floating]
"""One person's landmarks, shape (33, 5)."""

Point = tuple[float, float]

X_COLUMN = 0
Y_COLUMN = 1
VISIBILITY_COLUMN = 3
LANDMARK_COUNT = 33

SIDE_VISIBILITY_MARGIN = 0.2
"""A side is judged alongside the best-seen one only if its mean visibility is this close."""


class Landmark(IntEnum):
    """The BlazePose landmarks the scorers use."""

    NOSE = 0
    LEFT_EYE = 2
    RIGHT_EYE = 5
    LEFT_EAR = 7
    RIGHT_EAR = 8
    MOUTH_LEFT = 9
    MOUTH_RIGHT = 10
    LEFT_SHOULDER = 11
    RIGHT_SHOULDER = 12
    LEFT_ELBOW = 13
    RIGHT_ELBOW = 14
    LEFT_WRIST = 15
    RIGHT_WRIST = 16
    LEFT_HIP = 23
    RIGHT_HIP = 24
    LEFT_KNEE = 25
    RIGHT_KNEE = 26
    LEFT_ANKLE = 27
    RIGHT_ANKLE = 28


class Side(Enum):
    LEFT = "left"
    RIGHT = "right"


@dataclass(frozen=True)
class SideJoints:
    """The landmarks of one side of the body."""

    shoulder: Landmark
    elbow: Landmark
    wrist: Landmark
    hip: Landmark
    knee: Landmark
    ankle: Landmark
    ear: Landmark

    @property
    def arm(self) -> tuple[Landmark, Landmark, Landmark]:
        return (self.shoulder, self.elbow, self.wrist)

    @property
    def leg(self) -> tuple[Landmark, Landmark, Landmark]:
        return (self.hip, self.knee, self.ankle)


SIDE_JOINTS: dict[Side, SideJoints] = {
    Side.LEFT: SideJoints(
        Landmark.LEFT_SHOULDER,
        Landmark.LEFT_ELBOW,
        Landmark.LEFT_WRIST,
        Landmark.LEFT_HIP,
        Landmark.LEFT_KNEE,
        Landmark.LEFT_ANKLE,
        Landmark.LEFT_EAR,
    ),
    Side.RIGHT: SideJoints(
        Landmark.RIGHT_SHOULDER,
        Landmark.RIGHT_ELBOW,
        Landmark.RIGHT_WRIST,
        Landmark.RIGHT_HIP,
        Landmark.RIGHT_KNEE,
        Landmark.RIGHT_ANKLE,
        Landmark.RIGHT_EAR,
    ),
}


def visibility(keypoints: Keypoints, landmark: Landmark) -> float:
    """The landmark's visibility, 0 when its coordinates are missing."""
    row = keypoints[landmark]
    if not (math.isfinite(float(row[X_COLUMN])) and math.isfinite(float(row[Y_COLUMN]))):
        return 0.0
    value = float(row[VISIBILITY_COLUMN])
    return value if math.isfinite(value) else 0.0


def point(keypoints: Keypoints, landmark: Landmark) -> Point:
    row = keypoints[landmark]
    return (float(row[X_COLUMN]), float(row[Y_COLUMN]))


def all_visible(keypoints: Keypoints, landmarks: Sequence[Landmark], min_visibility: float) -> bool:
    return all(visibility(keypoints, landmark) >= min_visibility for landmark in landmarks)


def person_present(keypoints: Keypoints | None, min_visibility: float) -> bool:
    """A person is present when a shoulder and a hip are seen."""
    if keypoints is None or keypoints.shape[0] < LANDMARK_COUNT:
        return False
    shoulder = max(
        visibility(keypoints, Landmark.LEFT_SHOULDER),
        visibility(keypoints, Landmark.RIGHT_SHOULDER),
    )
    hip = max(visibility(keypoints, Landmark.LEFT_HIP), visibility(keypoints, Landmark.RIGHT_HIP))
    return shoulder >= min_visibility and hip >= min_visibility


def usable_sides(
    keypoints: Keypoints, chain: Sequence[str], min_visibility: float
) -> tuple[Side, ...]:
    """The sides whose ``chain`` joints (SideJoints attribute names) can be judged.

    Every joint must reach ``min_visibility``, and a side seen much worse than the other is left
    out: the far side in a side view is MediaPipe's guess, not a measurement.
    """
    scores: dict[Side, float] = {}
    for side, joints in SIDE_JOINTS.items():
        landmarks = [getattr(joints, name) for name in chain]
        values = [visibility(keypoints, landmark) for landmark in landmarks]
        if min(values) >= min_visibility:
            scores[side] = sum(values) / len(values)
    if not scores:
        return ()
    best = max(scores.values())
    return tuple(side for side, score in scores.items() if score >= best - SIDE_VISIBILITY_MARGIN)


def best_side(keypoints: Keypoints, chain: Sequence[str], min_visibility: float) -> Side | None:
    """The single best-seen usable side for ``chain``, or None."""
    sides = usable_sides(keypoints, chain, min_visibility)
    if not sides:
        return None

    def mean_visibility(side: Side) -> float:
        joints = SIDE_JOINTS[side]
        return sum(visibility(keypoints, getattr(joints, name)) for name in chain)

    return max(sides, key=mean_visibility)


def distance_px(a: Point, b: Point) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def midpoint(a: Point, b: Point) -> Point:
    return ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0)


def angle_deg(a: Point, vertex: Point, c: Point) -> float:
    """The angle a–vertex–c in degrees (0..180); NaN when a segment has no length."""
    ax, ay = a[0] - vertex[0], a[1] - vertex[1]
    cx, cy = c[0] - vertex[0], c[1] - vertex[1]
    norm = math.hypot(ax, ay) * math.hypot(cx, cy)
    if norm <= 0.0:
        return math.nan
    cosine = max(-1.0, min(1.0, (ax * cx + ay * cy) / norm))
    return math.degrees(math.acos(cosine))


def inclination_deg(lower: Point, upper: Point) -> float:
    """How far the segment lower→upper rises above the image horizontal, in -90..90 degrees."""
    rise = lower[1] - upper[1]
    run = abs(upper[0] - lower[0])
    if rise == 0.0 and run == 0.0:
        return math.nan
    return math.degrees(math.atan2(rise, run))


def offset_toward_ground_px(target: Point, start: Point, end: Point) -> float:
    """Perpendicular distance of ``target`` from the line start→end.

    Positive when the target lies on the ground side of the line (towards image +y), e.g. a
    sagging hip below the shoulder–ankle line; negative when it lies above (a raised hip).
    """
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length <= 0.0:
        return math.nan
    normal_x, normal_y = -dy / length, dx / length
    if normal_y < 0.0 or (normal_y == 0.0 and normal_x < 0.0):
        normal_x, normal_y = -normal_x, -normal_y
    return (target[0] - start[0]) * normal_x + (target[1] - start[1]) * normal_y


def mean_point(points: Sequence[Point]) -> Point:
    count = float(len(points))
    return (sum(p[0] for p in points) / count, sum(p[1] for p in points) / count)
