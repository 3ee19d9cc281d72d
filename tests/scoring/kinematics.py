"""Kinematic generator: synthetic BlazePose keypoint sequences with controlled form.

A small 3D body (centimetres; X forward along the body, Y up, Z to the examinee's left) is posed
from a few joint parameters per exercise and projected orthographically by a camera turned
``yaw_deg`` about the vertical (0 = looking at the left side, 90 = at the front, 180 = the right
side, 270 = the back), then scaled to pixels with image y downward. Visibility mimics MediaPipe:
the side turned away is barely visible, and from the front the legs hide behind the body.

Sequences are scripts of :class:`Move` (reach a target pose linearly over a duration) sampled at a
frame rate, with optional pixel noise; a pose with ``present=False`` yields no person (None).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from server.scoring.geometry import Landmark

Vector = tuple[float, float, float]
Keypoints = NDArray[np.float32]

UPPER_ARM_CM = 30.0
FOREARM_CM = 28.0
HALF_SHOULDER_CM = 19.0
HALF_HIP_CM = 10.0
TORSO_CM = 50.0
THIGH_CM = 45.0
SHIN_CM = 42.0
PIXELS_PER_CM = 2.5
IMAGE_CENTER_PX = (640.0, 600.0)
NEAR_VISIBILITY = 0.99
FAR_VISIBILITY = 0.3
HIDDEN_VISIBILITY = 0.1


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float
    keypoints: Keypoints | None


def add(a: Vector, b: Vector) -> Vector:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def scale(a: Vector, factor: float) -> Vector:
    return (a[0] * factor, a[1] * factor, a[2] * factor)


def sub(a: Vector, b: Vector) -> Vector:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def unit(a: Vector) -> Vector:
    length = math.sqrt(a[0] ** 2 + a[1] ** 2 + a[2] ** 2)
    return scale(a, 1.0 / length)


def lerp(a: Vector, b: Vector, fraction: float) -> Vector:
    return add(a, scale(sub(b, a), fraction))


def arm(
    wrist: Vector, along: Vector, plane: Vector, tilt_deg: float, elbow_deg: float
) -> tuple[Vector, Vector]:
    """Elbow and shoulder of an arm from its wrist: straight, it points ``along`` (a unit vector).

    The arm bends in the plane of ``along`` and ``plane`` (perpendicular unit vectors): the forearm
    leans ``tilt_deg`` from ``along`` towards ``plane``, and the upper arm turns away from
    ``plane`` as the elbow closes (``elbow_deg`` 180 = straight).
    """

    def direction(angle_deg: float) -> Vector:
        angle = math.radians(angle_deg)
        return add(scale(along, math.cos(angle)), scale(plane, math.sin(angle)))

    elbow = add(wrist, scale(direction(tilt_deg), FOREARM_CM))
    shoulder = add(elbow, scale(direction(tilt_deg - (180.0 - elbow_deg)), UPPER_ARM_CM))
    return elbow, shoulder


@dataclass(frozen=True)
class Camera:
    yaw_deg: float = 0.0
    noise_px: float = 0.0
    seed: int = 0


def project(joints: dict[Landmark, Vector], camera: Camera) -> Keypoints:
    """33×5 keypoints of a posed body seen by ``camera`` (before noise).

    Landmarks the model does not place sit on the nose with visibility 0.
    """
    yaw = math.radians(camera.yaw_deg)
    facing_left = math.cos(yaw)
    frontal = abs(math.sin(yaw)) > 0.9
    keypoints = np.zeros((33, 5), dtype=np.float32)
    for index in range(33):
        landmark = Landmark(index) if index in _PLACED else None
        position = joints[Landmark.NOSE] if landmark is None else joints[landmark]
        x_cm = position[0] * math.cos(yaw) - position[2] * math.sin(yaw)
        keypoints[index, 0] = IMAGE_CENTER_PX[0] + PIXELS_PER_CM * x_cm
        keypoints[index, 1] = IMAGE_CENTER_PX[1] - PIXELS_PER_CM * position[1]
        keypoints[index, 3] = (
            0.0 if landmark is None else _visibility(landmark, facing_left, frontal)
        )
    return keypoints


_PLACED = {int(landmark) for landmark in Landmark}


def _visibility(landmark: Landmark, facing_left: float, frontal: bool) -> float:
    name = landmark.name
    if not name.startswith(("LEFT", "RIGHT")) or name.endswith(("EYE", "EAR")):
        return NEAR_VISIBILITY
    if frontal:
        return HIDDEN_VISIBILITY if name.endswith(("KNEE", "ANKLE")) else NEAR_VISIBILITY
    facing = facing_left if name.startswith("LEFT") else -facing_left
    return NEAR_VISIBILITY if facing > 0.0 else FAR_VISIBILITY


Pose = TypeVar("Pose")


@dataclass(frozen=True)
class Move(Generic[Pose]):
    """Reach ``target`` over ``duration_s``; floats move linearly, other fields switch at once."""

    duration_s: float
    target: Pose


def animate(start: Pose, moves: Sequence[Move[Pose]], fps: float) -> list[tuple[float, Pose]]:
    """Sample the script at ``fps``: (time_s, pose) from time 0 to the end of the last move."""
    boundaries: list[tuple[float, Pose, Pose]] = []
    time_s = 0.0
    previous = start
    for move in moves:
        boundaries.append((time_s, previous, move.target))
        time_s += move.duration_s
        previous = move.target
    total_s = time_s
    samples: list[tuple[float, Pose]] = []
    count = math.floor(total_s * fps + 1e-9) + 1
    segment = 0
    for index in range(count):
        t = index / fps
        while segment + 1 < len(boundaries) and t >= boundaries[segment + 1][0] - 1e-9:
            segment += 1
        begin_s, source, target = boundaries[segment]
        duration_s = moves[segment].duration_s
        fraction = 1.0 if duration_s <= 0 else min(1.0, (t - begin_s) / duration_s)
        samples.append((t, _blend(source, target, fraction)))
    return samples


def _blend(source: Pose, target: Pose, fraction: float) -> Pose:
    values = {}
    for field in dataclasses.fields(source):  # type: ignore[arg-type]
        a = getattr(source, field.name)
        b = getattr(target, field.name)
        values[field.name] = a + (b - a) * fraction if isinstance(a, float) else b
    return dataclasses.replace(source, **values)  # type: ignore[type-var]


def frames(
    start: Pose,
    moves: Sequence[Move[Pose]],
    render: Callable[[Pose, Camera], Keypoints | None],
    camera: Camera | None = None,
    fps: float = 20.0,
) -> list[Frame]:
    """Render a script to frames, adding ``camera.noise_px`` of uniform pixel noise."""
    camera = camera or Camera()
    rng = np.random.default_rng(camera.seed)
    result: list[Frame] = []
    for index, (time_s, pose) in enumerate(animate(start, moves, fps)):
        keypoints = render(pose, camera)
        if keypoints is not None and camera.noise_px > 0:
            keypoints[:, :2] += rng.uniform(-camera.noise_px, camera.noise_px, (33, 2))
        result.append(Frame(index, round(time_s, 6), keypoints))
    return result


def hide(
    frames_: list[Frame], landmarks: Sequence[Landmark], start_s: float, end_s: float
) -> list[Frame]:
    """The same frames with ``landmarks`` invisible (visibility 0) between the two times."""
    hidden: list[Frame] = []
    for frame in frames_:
        keypoints = frame.keypoints
        if keypoints is not None and start_s <= frame.time_s < end_s:
            keypoints = keypoints.copy()
            keypoints[list(landmarks), 3] = 0.0
        hidden.append(Frame(frame.index, frame.time_s, keypoints))
    return hidden


def head(neck: Vector, forward: Vector, up: Vector, joints: dict[Landmark, Vector]) -> None:
    """Place the face landmarks of a head whose face points ``forward`` and crown ``up``."""
    side: Vector = (0.0, 0.0, 1.0)
    nose = add(add(neck, scale(up, 14.0)), scale(forward, 10.0))
    joints[Landmark.NOSE] = nose
    for sign, eye, ear, mouth in (
        (1.0, Landmark.LEFT_EYE, Landmark.LEFT_EAR, Landmark.MOUTH_LEFT),
        (-1.0, Landmark.RIGHT_EYE, Landmark.RIGHT_EAR, Landmark.MOUTH_RIGHT),
    ):
        joints[eye] = add(add(nose, scale(up, 3.0)), scale(side, 3.0 * sign))
        joints[ear] = add(
            add(add(nose, scale(up, 2.0)), scale(forward, -9.0)), scale(side, 7.0 * sign)
        )
        joints[mouth] = add(add(nose, scale(up, -4.0)), scale(side, 2.5 * sign))
