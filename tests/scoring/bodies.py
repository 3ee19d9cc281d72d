"""Posable bodies for the three exercises, and scripts of repetitions with controlled form.

Each pose is a frozen dataclass of a few joint parameters; ``render_*`` turns it into keypoints
through :mod:`tests.scoring.kinematics`. The ``*_reps`` builders return scripts (lists of
:class:`Move`) whose form faults are set per repetition.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from server.scoring.geometry import Landmark
from tests.scoring.kinematics import (
    HALF_HIP_CM,
    HALF_SHOULDER_CM,
    SHIN_CM,
    THIGH_CM,
    TORSO_CM,
    Camera,
    Keypoints,
    Move,
    Vector,
    add,
    arm,
    head,
    lerp,
    project,
    scale,
    sub,
    unit,
)

SIDES = (
    (1.0, Landmark.LEFT_SHOULDER, Landmark.LEFT_ELBOW, Landmark.LEFT_WRIST),
    (-1.0, Landmark.RIGHT_SHOULDER, Landmark.RIGHT_ELBOW, Landmark.RIGHT_WRIST),
)
LEGS = (
    (1.0, Landmark.LEFT_HIP, Landmark.LEFT_KNEE, Landmark.LEFT_ANKLE),
    (-1.0, Landmark.RIGHT_HIP, Landmark.RIGHT_KNEE, Landmark.RIGHT_ANKLE),
)
UP: Vector = (0.0, 1.0, 0.0)
DOWN: Vector = (0.0, -1.0, 0.0)
FORWARD: Vector = (1.0, 0.0, 0.0)


def _legs(
    hip_mid: Vector, knee_mid: Vector, ankle_mid: Vector, joints: dict[Landmark, Vector]
) -> None:
    for sign, hip, knee, ankle in LEGS:
        offset: Vector = (0.0, 0.0, sign * HALF_HIP_CM)
        joints[hip] = add(hip_mid, offset)
        joints[knee] = add(knee_mid, offset)
        joints[ankle] = add(ankle_mid, offset)


def standing_joints() -> dict[Landmark, Vector]:
    """Someone standing upright, arms hanging."""
    joints: dict[Landmark, Vector] = {}
    for sign, shoulder, elbow, wrist in SIDES:
        joints[shoulder] = (0.0, 145.0, sign * HALF_SHOULDER_CM)
        joints[elbow] = (0.0, 117.0, sign * (HALF_SHOULDER_CM + 2.0))
        joints[wrist] = (0.0, 90.0, sign * (HALF_SHOULDER_CM + 3.0))
    _legs((0.0, 95.0, 0.0), (0.0, 50.0, 0.0), (-3.0, 8.0, 0.0), joints)
    head((0.0, 150.0, 0.0), FORWARD, UP, joints)
    return joints


# --- push-up ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushUpPose:
    elbow_deg: float = 175.0
    forearm_tilt_deg: float = 0.0
    """Forearm leaning from vertical: + lifts the shoulder relative to the elbow, − drops it."""
    hip_offset_cm: float = 0.0
    """Hip off the shoulder–ankle line: + sags towards the ground, − raised."""
    knee_deg: float = 180.0
    """Knee bend, the knee dropping towards the ground."""
    present: bool = True
    standing: bool = False


ELBOW_FLARE_DEG = 30.0


def push_up_joints(pose: PushUpPose) -> dict[Landmark, Vector]:
    joints: dict[Landmark, Vector] = {}
    flare = math.radians(ELBOW_FLARE_DEG)
    for sign, shoulder, elbow, wrist in SIDES:
        wrist_at: Vector = (0.0, 3.0, sign * (HALF_SHOULDER_CM + 5.0))
        plane = unit((-math.cos(flare), 0.0, sign * math.sin(flare)))
        joints[elbow], joints[shoulder] = arm(
            wrist_at, UP, plane, pose.forearm_tilt_deg, pose.elbow_deg
        )
        joints[wrist] = wrist_at
    left, right = joints[Landmark.LEFT_SHOULDER], joints[Landmark.RIGHT_SHOULDER]
    shoulder_mid = lerp(left, right, 0.5)
    shoulder_mid = (shoulder_mid[0], shoulder_mid[1], 0.0)
    ankle_mid: Vector = (-135.0, 8.0, 0.0)
    along = unit(sub(ankle_mid, shoulder_mid))
    toward_ground = unit((along[1], -along[0], 0.0))
    if toward_ground[1] > 0:
        toward_ground = scale(toward_ground, -1.0)
    hip_mid = add(lerp(shoulder_mid, ankle_mid, 0.36), scale(toward_ground, pose.hip_offset_cm))
    chord = sub(ankle_mid, hip_mid)
    half_chord = math.sqrt(sum(value * value for value in chord)) / 2.0
    knee_drop = (
        0.0 if pose.knee_deg >= 180.0 else half_chord / math.tan(math.radians(pose.knee_deg) / 2)
    )
    knee_mid = add(lerp(hip_mid, ankle_mid, 0.5), scale(toward_ground, knee_drop))
    _legs(hip_mid, knee_mid, ankle_mid, joints)
    head(
        add(shoulder_mid, scale(along, -6.0)), scale(toward_ground, 1.0), scale(along, -1.0), joints
    )
    return joints


def render_push_up(pose: PushUpPose, camera: Camera) -> Keypoints | None:
    if not pose.present:
        return None
    return project(standing_joints() if pose.standing else push_up_joints(pose), camera)


TOP = PushUpPose()


def push_up_reps(
    count: int,
    *,
    depth_deg: float = 60.0,
    lockout_deg: float = 175.0,
    down_s: float = 0.6,
    bottom_s: float = 0.1,
    up_s: float = 0.6,
    top_s: float = 0.5,
    bottom: PushUpPose | None = None,
) -> list[Move[PushUpPose]]:
    """``count`` repetitions from the top: down to ``depth_deg``, up to ``lockout_deg``.

    ``bottom`` sets other fields of the bottom pose (hip sag, forearm tilt, knee); its elbow is
    replaced by ``depth_deg``.
    """
    low = dataclasses.replace(bottom or TOP, elbow_deg=depth_deg)
    high = dataclasses.replace(TOP, elbow_deg=lockout_deg)
    moves: list[Move[PushUpPose]] = []
    for _ in range(count):
        moves += [Move(down_s, low), Move(bottom_s, low), Move(up_s, high), Move(top_s, high)]
    return moves


def hold(duration_s: float, pose: PushUpPose = TOP) -> Move[PushUpPose]:
    return Move(duration_s, pose)


def stay(pose: PushUpPose, duration_s: float) -> list[Move[PushUpPose]]:
    """Move into ``pose`` quickly (0.2 s), then hold it."""
    return [Move(0.2, pose), Move(duration_s, pose)]


# --- sit-up -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SitUpPose:
    torso_deg: float = 0.0
    """The torso above horizontal: 0 lying, 90 upright (the hip angle is about 140 − this)."""
    hip_lift_cm: float = 0.0
    hands_forward: float = 0.0
    """0 hands behind the head (hidden, as MediaPipe sees them), 1 reaching for the knees."""
    present: bool = True


def sit_up_joints(pose: SitUpPose) -> dict[Landmark, Vector]:
    joints: dict[Landmark, Vector] = {}
    hip_mid: Vector = (0.0, 10.0 + pose.hip_lift_cm, 0.0)
    knee_mid: Vector = (
        THIGH_CM * math.cos(math.radians(40.0)),
        10.0 + THIGH_CM * math.sin(math.radians(40.0)),
        0.0,
    )
    ankle_mid: Vector = (knee_mid[0] + math.sqrt(SHIN_CM**2 - (knee_mid[1] - 8.0) ** 2), 8.0, 0.0)
    _legs(hip_mid, knee_mid, ankle_mid, joints)
    torso = math.radians(pose.torso_deg)
    along: Vector = (-math.cos(torso), math.sin(torso), 0.0)
    face: Vector = (math.sin(torso), math.cos(torso), 0.0)
    shoulder_mid = add(hip_mid, scale(along, TORSO_CM))
    neck = add(shoulder_mid, scale(along, 6.0))
    head(neck, face, along, joints)
    for sign, shoulder, elbow, wrist in SIDES:
        side: Vector = (0.0, 0.0, sign)
        joints[shoulder] = add(shoulder_mid, scale(side, HALF_SHOULDER_CM))
        behind_elbow = add(add(add(neck, scale(along, 8.0)), scale(face, 12.0)), scale(side, 18.0))
        behind_wrist = add(add(add(neck, scale(along, 10.0)), scale(face, -6.0)), scale(side, 5.0))
        reach_elbow = add(
            add(joints[shoulder], scale(sub(knee_mid, shoulder_mid), 0.45)), scale(face, 5.0)
        )
        reach_wrist = add(add(knee_mid, scale(side, 12.0)), scale(face, 8.0))
        joints[elbow] = lerp(behind_elbow, reach_elbow, pose.hands_forward)
        joints[wrist] = lerp(behind_wrist, reach_wrist, pose.hands_forward)
    return joints


HIDDEN_WRIST_VISIBILITY = 0.6


def render_sit_up(pose: SitUpPose, camera: Camera) -> Keypoints | None:
    if not pose.present:
        return None
    keypoints = project(sit_up_joints(pose), camera)
    if pose.hands_forward < 0.5:
        wrists = [Landmark.LEFT_WRIST, Landmark.RIGHT_WRIST]
        keypoints[wrists, 3] = [
            min(HIDDEN_WRIST_VISIBILITY, value) for value in keypoints[wrists, 3]
        ]
    return keypoints


LYING = SitUpPose()
SITTING = SitUpPose(torso_deg=85.0)


def sit_up_reps(
    count: int,
    *,
    top_deg: float = 85.0,
    bottom_deg: float = 0.0,
    up_s: float = 0.8,
    top_s: float = 0.3,
    down_s: float = 0.8,
    bottom_s: float = 0.3,
    top: SitUpPose | None = None,
) -> list[Move[SitUpPose]]:
    """``count`` sit-ups from lying: up to ``top_deg``, back to ``bottom_deg``.

    ``top`` sets other fields of the rising half (hip lift, hands); they return to normal lying.
    """
    high = dataclasses.replace(top or LYING, torso_deg=top_deg)
    low = dataclasses.replace(LYING, torso_deg=bottom_deg)
    moves: list[Move[SitUpPose]] = []
    for _ in range(count):
        moves += [Move(up_s, high), Move(top_s, high), Move(down_s, low), Move(bottom_s, low)]
    return moves


# --- pull-up ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullUpPose:
    elbow_deg: float = 172.0
    sway_cm: float = 0.0
    """The hips displaced sideways (seen from the front)."""
    on_bar: bool = True
    present: bool = True


BAR_CM = 230.0


def pull_up_joints(pose: PullUpPose) -> dict[Landmark, Vector]:
    if not pose.on_bar:
        return standing_joints()
    joints: dict[Landmark, Vector] = {}
    for sign, shoulder, elbow, wrist in SIDES:
        wrist_at: Vector = (0.0, BAR_CM, sign * HALF_SHOULDER_CM)
        plane = unit((0.5, 0.0, sign * 0.866))
        joints[elbow], joints[shoulder] = arm(wrist_at, DOWN, plane, 0.0, pose.elbow_deg)
        joints[wrist] = wrist_at
    shoulder_mid = lerp(joints[Landmark.LEFT_SHOULDER], joints[Landmark.RIGHT_SHOULDER], 0.5)
    sway: Vector = (0.0, 0.0, pose.sway_cm)
    hip_mid = add(add(shoulder_mid, (0.0, -TORSO_CM, 0.0)), sway)
    knee_mid = add(add(hip_mid, (0.0, -THIGH_CM, 0.0)), scale(sway, 0.5))
    ankle_mid = add(knee_mid, (0.0, -SHIN_CM, 0.0))
    _legs(hip_mid, knee_mid, ankle_mid, joints)
    head(add(shoulder_mid, (0.0, 6.0, 0.0)), FORWARD, UP, joints)
    return joints


def render_pull_up(pose: PullUpPose, camera: Camera) -> Keypoints | None:
    if not pose.present:
        return None
    return project(pull_up_joints(pose), camera)


HANG = PullUpPose()
FRONT = Camera(yaw_deg=90.0)


def pull_up_reps(
    count: int,
    *,
    top_deg: float = 25.0,
    hang_deg: float = 172.0,
    up_s: float = 0.9,
    top_s: float = 0.3,
    down_s: float = 0.9,
    hang_s: float = 0.5,
    sway_cm: float = 0.0,
) -> list[Move[PullUpPose]]:
    """``count`` pull-ups from the hang: elbows to ``top_deg``, back to ``hang_deg``.

    ``sway_cm`` swings the hips to one side on the way up and back on the way down.
    """
    high = PullUpPose(elbow_deg=top_deg, sway_cm=sway_cm)
    low = PullUpPose(elbow_deg=hang_deg, sway_cm=-sway_cm)
    moves: list[Move[PullUpPose]] = []
    for _ in range(count):
        moves += [Move(up_s, high), Move(top_s, high), Move(down_s, low), Move(hang_s, low)]
    return moves
