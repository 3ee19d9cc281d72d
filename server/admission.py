"""Checking a StartAssessmentRequest and turning it into an :class:`AssessmentPlan`.

Every refusal names the request field it is about. Output paths are confined to the video root:
no "..", no absolute path outside the root, no symlink that leads out of it, no existing file.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from client import assessment_pb2 as pb
from server.errors import AlreadyExists, InvalidArgument
from server.settings import CAMERA_ID_PATTERN, Settings

ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._/-]{1,63}$")
MAX_LABELS = 16
MAX_LABEL_VALUE_CHARS = 256
MAX_FRAME_COUNT = 24 * 3600 * 60  # a day at 60 frames/s
MAX_DURATION_S = 24 * 3600.0
MAX_OUTPUT_PATH_CHARS = 1024
DEFAULT_LEVEL = 5
STREAM_SCHEMES = ("rtsp", "rtsps")


@dataclass(frozen=True)
class AssessmentPlan:
    """A checked request: everything a session needs to run one assessment."""

    assessment_id: str
    camera_id: str
    source_url: str
    exercise: pb.Exercise.ValueType
    difficulty_level: int
    frame_count: int
    """0 when ``duration_s`` bounds the assessment instead."""
    duration_s: float
    """0 when ``frame_count`` bounds the assessment instead."""
    video_path: Path
    """Absolute, inside the video root, not existing at admission."""
    labels: Mapping[str, str] = field(default_factory=dict)
    client_chose_id: bool = False

    def same_parameters(self, other: AssessmentPlan) -> bool:
        """Whether a repeated request with the same assessment_id asks for the same thing."""
        return (
            self.camera_id == other.camera_id
            and self.source_url == other.source_url
            and self.exercise == other.exercise
            and self.difficulty_level == other.difficulty_level
            and self.frame_count == other.frame_count
            and self.duration_s == other.duration_s
            and self.video_path == other.video_path
            and dict(self.labels) == dict(other.labels)
        )


def admit(
    request: pb.StartAssessmentRequest, settings: Settings, *, repeated: bool = False
) -> AssessmentPlan:
    """Check ``request`` against the settings; raise InvalidArgument / AlreadyExists.

    ``repeated``: the assessment_id is already known, so its output file may exist (the caller
    compares the plans instead).
    """
    camera_id = request.camera_id
    if not camera_id:
        raise InvalidArgument("camera_id", "required")
    if not CAMERA_ID_PATTERN.match(camera_id):
        raise InvalidArgument("camera_id", "1..64 characters of A-Z a-z 0-9 . _ -")

    client_chose_id = bool(request.assessment_id)
    if client_chose_id and not ID_PATTERN.match(request.assessment_id):
        raise InvalidArgument("assessment_id", "1..64 characters of A-Z a-z 0-9 . _ -")
    assessment_id = request.assessment_id or str(uuid.uuid4())

    source_url = _source_url(request.source_url, camera_id, settings)
    exercise = request.exercise or pb.EXERCISE_PUSH_UP
    if exercise not in pb.Exercise.values():
        raise InvalidArgument("exercise", f"unknown value {exercise}")

    level = request.difficulty_level or DEFAULT_LEVEL
    if not 1 <= level <= 5:
        raise InvalidArgument("difficulty_level", f"must be 1..5 (0 = default 5), got {level}")

    frame_count, duration_s = _length(request)
    labels = _labels(request.labels)
    relative = request.output_path or f"{camera_id}/{assessment_id}.mp4"
    video_path = confine_output_path(relative, settings.video_root, may_exist=repeated)
    return AssessmentPlan(
        assessment_id=assessment_id,
        camera_id=camera_id,
        source_url=source_url,
        exercise=exercise,
        difficulty_level=level,
        frame_count=frame_count,
        duration_s=duration_s,
        video_path=video_path,
        labels=labels,
        client_chose_id=client_chose_id,
    )


def _source_url(given: str, camera_id: str, settings: Settings) -> str:
    configured = settings.cameras.get(camera_id)
    if not given:
        if configured is None:
            raise InvalidArgument(
                "source_url", f"required: camera {camera_id!r} is not in the server's configuration"
            )
        return configured
    if configured is not None and given != configured:
        raise InvalidArgument(
            "source_url", f"camera {camera_id!r} is configured with another URL; leave it empty"
        )
    parts = urlsplit(given)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if not settings.security.allow_file_sources:
            raise InvalidArgument("source_url", "file:// sources are disabled on this server")
        if not Path(unquote(parts.path)).is_file():
            raise InvalidArgument("source_url", f"no such file: {unquote(parts.path)}")
        return given
    if scheme not in STREAM_SCHEMES:
        allowed = ", ".join(f"{name}://" for name in STREAM_SCHEMES)
        raise InvalidArgument("source_url", f"scheme must be one of {allowed}, got {given!r}")
    if not parts.hostname:
        raise InvalidArgument("source_url", f"no host in {given!r}")
    return given


def _length(request: pb.StartAssessmentRequest) -> tuple[int, float]:
    has_duration = request.HasField("duration")
    if request.frame_count and has_duration:
        raise InvalidArgument("frame_count", "set frame_count or duration, not both")
    if has_duration:
        duration_s = request.duration.seconds + request.duration.nanos / 1e9
        if not 0 < duration_s <= MAX_DURATION_S:
            raise InvalidArgument("duration", f"must be > 0 and ≤ 24 h, got {duration_s:g} s")
        return 0, duration_s
    if request.frame_count <= 0:
        raise InvalidArgument(
            "frame_count", f"must be > 0 (or set duration), got {request.frame_count}"
        )
    if request.frame_count > MAX_FRAME_COUNT:
        raise InvalidArgument("frame_count", f"must be ≤ {MAX_FRAME_COUNT}")
    return request.frame_count, 0.0


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument("labels", f"at most {MAX_LABELS} entries, got {len(labels)}")
    for key, value in labels.items():
        if not LABEL_KEY_PATTERN.match(key):
            raise InvalidArgument(
                f"labels[{key!r}]", "key: 1..63 characters of A-Z a-z 0-9 . _ / -"
            )
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise InvalidArgument(f"labels[{key!r}]", f"value longer than {MAX_LABEL_VALUE_CHARS}")
    return dict(labels)


def confine_output_path(requested: str, video_root: Path, *, may_exist: bool = False) -> Path:
    """The absolute path for ``requested`` inside ``video_root``; refusals name output_path."""
    field_name = "output_path"
    if len(requested) > MAX_OUTPUT_PATH_CHARS:
        raise InvalidArgument(field_name, f"longer than {MAX_OUTPUT_PATH_CHARS} characters")
    if "\x00" in requested or "\\" in requested:
        raise InvalidArgument(field_name, "contains a NUL or backslash")
    pure = PurePosixPath(requested)
    if ".." in pure.parts:
        raise InvalidArgument(field_name, "must not contain '..'")
    if pure.suffix.lower() != ".mp4" or not pure.stem:
        raise InvalidArgument(field_name, "must name an .mp4 file")
    root = video_root.resolve()
    if pure.is_absolute():
        candidate = Path(pure)
        if not candidate.is_relative_to(root):
            raise InvalidArgument(field_name, f"must lie inside the video root {root}")
    else:
        candidate = root / pure
    # Resolving the parent follows every symlink on the way; the result must stay in the root.
    parent = candidate.parent.resolve()
    if not parent.is_relative_to(root):
        raise InvalidArgument(field_name, "leaves the video root through a symlink")
    final = parent / candidate.name
    if may_exist:
        return final
    for existing in (final, final.with_name(final.name + ".part")):
        if os.path.lexists(existing):
            raise AlreadyExists(f"output_path: {existing} already exists")
    return final
