"""How the `fitscore` CLI shows assessments and events: readable lines, or protobuf JSON.

Readable event lines start with the event's position in the evidence video (mm:ss.s), e.g.

    00:12.4  rep 5 counted  (elbow 82°→171°)
    00:15.0  foul NOT_LOW_ENOUGH: elbow reached 112°, needs ≤ 90°
    00:30.0  progress  3 reps  600/2440 frames
    finished COMPLETED  reps 12  fouls {NOT_LOW_ENOUGH: 2}  video /videos/lane-1/a.mp4

Enum values print without their type prefix (`FOUL_CODE_NOT_LOW_ENOUGH` → `NOT_LOW_ENOUGH`); a value
newer than this client prints as `UNKNOWN(<number>)` instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from client import assessment_pb2 as pb

EXERCISE_BY_NAME: Final[Mapping[str, pb.Exercise.ValueType]] = {
    "push-up": pb.EXERCISE_PUSH_UP,
    "sit-up": pb.EXERCISE_SIT_UP,
    "pull-up": pb.EXERCISE_PULL_UP,
}
STATE_BY_NAME: Final[Mapping[str, pb.AssessmentState.ValueType]] = {
    "pending": pb.ASSESSMENT_STATE_PENDING,
    "running": pb.ASSESSMENT_STATE_RUNNING,
    "finishing": pb.ASSESSMENT_STATE_FINISHING,
    "finished": pb.ASSESSMENT_STATE_FINISHED,
}

_NANOSECONDS_PER_DECISECOND: Final = 100_000_000
_DECISECONDS_PER_MINUTE: Final = 600
# The push-up pair that decides most reps, shown together as "elbow 82°→171°".
_MIN_ELBOW_MEASURE: Final = "min_elbow_angle_deg"
_LOCKOUT_ELBOW_MEASURE: Final = "lockout_elbow_angle_deg"
_DEGREES_SUFFIX: Final = "_deg"


@dataclass(frozen=True)
class Printer:
    """Writes to standard output (looked up at each call), flushing every line for live output."""

    json_output: bool

    def assessment(self, assessment: pb.Assessment) -> None:
        text = to_json_line(assessment) if self.json_output else format_assessment(assessment)
        print(text, flush=True)

    def assessment_rows(self, assessments: Sequence[pb.Assessment]) -> None:
        if self.json_output:
            lines = [to_json_line(assessment) for assessment in assessments]
        else:
            lines = [format_assessment_row(assessment) for assessment in assessments]
            lines = lines or ["(no assessments)"]
        for line in lines:
            print(line, flush=True)

    def event(self, event: pb.AssessmentEvent, target: pb.Assessment | None) -> None:
        text = to_json_line(event) if self.json_output else format_event(event, target)
        print(text, flush=True)


def to_json_line(message: Message) -> str:
    """Protobuf JSON with the .proto's field names, on one line."""
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)


def enum_label(descriptor: EnumDescriptor, number: int) -> str:
    """The value's name without the enum's prefix (taken from its `*_UNSPECIFIED` zero value)."""
    value = descriptor.values_by_number.get(number)
    if value is None:
        return f"UNKNOWN({number})"
    prefix = descriptor.values_by_number[0].name.removesuffix("UNSPECIFIED")
    return value.name.removeprefix(prefix)


def exercise_name(exercise: int) -> str:
    for name, value in EXERCISE_BY_NAME.items():
        if value == exercise:
            return name
    return enum_label(pb.Exercise.DESCRIPTOR, exercise)


def format_media_offset(offset: duration_pb2.Duration) -> str:
    """mm:ss.s, rounded to a tenth of a second; minutes keep counting past 59."""
    nanoseconds = offset.ToNanoseconds()
    sign = "-" if nanoseconds < 0 else ""
    deciseconds = round(abs(nanoseconds) / _NANOSECONDS_PER_DECISECOND)
    minutes, remaining_deciseconds = divmod(deciseconds, _DECISECONDS_PER_MINUTE)
    seconds, tenths = divmod(remaining_deciseconds, 10)
    return f"{sign}{minutes:02d}:{seconds:02d}.{tenths}"


def format_measures(measures: Mapping[str, float]) -> str:
    """`elbow 82°→171°, min body line angle 168°, shoulder elbow depth 0.12`, sorted by name."""
    remaining = dict(measures)
    parts: list[str] = []
    if _MIN_ELBOW_MEASURE in remaining and _LOCKOUT_ELBOW_MEASURE in remaining:
        min_elbow_deg = remaining.pop(_MIN_ELBOW_MEASURE)
        lockout_elbow_deg = remaining.pop(_LOCKOUT_ELBOW_MEASURE)
        parts.append(f"elbow {min_elbow_deg:.0f}°→{lockout_elbow_deg:.0f}°")
    for name in sorted(remaining):
        value = remaining[name]
        if name.endswith(_DEGREES_SUFFIX):
            words = name.removesuffix(_DEGREES_SUFFIX).replace("_", " ")
            parts.append(f"{words} {value:.0f}°")
        else:
            parts.append(f"{name.replace('_', ' ')} {value:.2f}")
    return ", ".join(parts)


def format_fouls(fouls: Mapping[str, int]) -> str:
    """`{NOT_LOW_ENOUGH: 2, HIPS_SAGGING: 1}`: most frequent first, then by name."""
    prefix = pb.FoulCode.DESCRIPTOR.values_by_number[0].name.removesuffix("UNSPECIFIED")
    ordered = sorted(fouls.items(), key=lambda item: (-item[1], item[0]))
    return "{" + ", ".join(f"{code.removeprefix(prefix)}: {count}" for code, count in ordered) + "}"


def format_event(event: pb.AssessmentEvent, assessment: pb.Assessment | None = None) -> str:
    """One line for one event. `assessment` (when known) gives Progress its frame or time target."""
    prefix = (
        format_media_offset(event.media_offset) + "  " if event.HasField("media_offset") else ""
    )
    payload = event.WhichOneof("payload")
    if payload == "started":
        body = _format_started(event.started)
    elif payload == "rep_counted":
        body = _format_rep_counted(event.rep_counted)
    elif payload == "foul":
        body = _format_foul(event.foul)
    elif payload == "warning":
        body = _format_warning(event.warning)
    elif payload == "progress":
        body = _format_progress(event.progress, assessment)
    elif payload == "finished":
        body = format_finished(event.finished.assessment)
    else:
        body = f"event {event.sequence}: a kind this client does not know"
    return prefix + body


def format_finished(assessment: pb.Assessment) -> str:
    reason = enum_label(pb.EndReason.DESCRIPTOR, assessment.end_reason)
    if assessment.end_reason == pb.END_REASON_VIOLATION:
        reason += " " + enum_label(pb.ViolationCode.DESCRIPTOR, assessment.violation)
    parts = [
        f"finished {reason}",
        f"reps {assessment.rep_count}",
        f"fouls {format_fouls(assessment.fouls)}",
    ]
    if assessment.video_path:
        parts.append(f"video {assessment.video_path}")
    if assessment.end_detail:
        parts.append(f"({assessment.end_detail})")
    return "  ".join(parts)


def format_assessment(assessment: pb.Assessment) -> str:
    """A block of `name  value` lines; fields the server left empty are left out."""
    rows: list[tuple[str, str]] = [
        ("assessment", assessment.assessment_id),
        ("camera", assessment.camera_id),
        ("exercise", f"{exercise_name(assessment.exercise)}  level {assessment.difficulty_level}"),
        ("length", _format_length(assessment)),
        ("state", _format_state(assessment)),
        ("reps", f"{assessment.rep_count}  fouls {format_fouls(assessment.fouls)}"),
        (
            "frames",
            f"received {assessment.frames_received}  judged {assessment.frames_judged}"
            f"  skipped {assessment.frames_skipped}",
        ),
        ("video", assessment.video_path),
        ("events", assessment.events_path),
        ("pose", assessment.pose_path),
        ("labels", _format_labels(assessment.labels)),
        ("created", _format_time(assessment.create_time)),
        ("started", _format_time(assessment.start_time)),
        ("ended", _format_time(assessment.end_time)),
        ("last event", str(assessment.last_sequence) if assessment.last_sequence else ""),
    ]
    return "\n".join(f"{name:<11} {value}" for name, value in rows if value)


def format_assessment_row(assessment: pb.Assessment) -> str:
    """One line per assessment, for `fitscore list`."""
    return "  ".join(
        [
            assessment.assessment_id,
            assessment.camera_id,
            exercise_name(assessment.exercise),
            _format_state(assessment),
            f"{assessment.rep_count} {_plural(assessment.rep_count, 'rep')}",
            _format_time(assessment.create_time) or "-",
        ]
    )


def _format_started(started: pb.Started) -> str:
    fps = f"{started.camera_fps:.1f} fps" if started.camera_fps > 0 else "fps unknown"
    size = f"{started.frame_width}x{started.frame_height}"
    return f"started  camera {started.camera_id}  {size}  {fps}"


def _format_rep_counted(rep_counted: pb.RepCounted) -> str:
    line = f"rep {rep_counted.rep_count} counted"
    measures = format_measures(rep_counted.evidence.measures)
    return f"{line}  ({measures})" if measures else line


def _format_foul(foul: pb.Foul) -> str:
    line = "foul " + enum_label(pb.FoulCode.DESCRIPTOR, foul.code)
    if foul.detail:
        return f"{line}: {foul.detail}"
    measures = format_measures(foul.evidence.measures)
    return f"{line}  ({measures})" if measures else line


def _format_warning(warning: pb.Warning) -> str:
    line = "warning " + enum_label(pb.WarningCode.DESCRIPTOR, warning.code)
    return f"{line}: {warning.detail}" if warning.detail else line


def _format_progress(progress: pb.Progress, assessment: pb.Assessment | None) -> str:
    parts = ["progress", f"{progress.rep_count} {_plural(progress.rep_count, 'rep')}"]
    if assessment is not None and assessment.frame_count > 0:
        parts.append(f"{progress.frames_received}/{assessment.frame_count} frames")
    elif assessment is not None and assessment.HasField("duration"):
        elapsed_s = progress.elapsed.ToNanoseconds() / 1e9
        total_s = assessment.duration.ToNanoseconds() / 1e9
        parts.append(f"{elapsed_s:.1f}/{total_s:.1f} s")
    else:
        parts.append(f"{progress.frames_received} frames")
    if progress.frames_skipped:
        parts.append(f"{progress.frames_skipped} skipped")
    if progress.phase != pb.PHASE_UNSPECIFIED:
        parts.append("phase " + enum_label(pb.Phase.DESCRIPTOR, progress.phase))
    return "  ".join(parts)


def _format_state(assessment: pb.Assessment) -> str:
    state = enum_label(pb.AssessmentState.DESCRIPTOR, assessment.state)
    if assessment.state != pb.ASSESSMENT_STATE_FINISHED:
        return state
    reason = enum_label(pb.EndReason.DESCRIPTOR, assessment.end_reason)
    if assessment.end_reason == pb.END_REASON_VIOLATION:
        reason += " " + enum_label(pb.ViolationCode.DESCRIPTOR, assessment.violation)
    detail = f" ({assessment.end_detail})" if assessment.end_detail else ""
    return f"{state} {reason}{detail}"


def _format_length(assessment: pb.Assessment) -> str:
    if assessment.frame_count > 0:
        return f"{assessment.frame_count} frames"
    if assessment.HasField("duration"):
        return f"{assessment.duration.ToNanoseconds() / 1e9:.1f} s"
    return ""


def _format_labels(labels: Mapping[str, str]) -> str:
    return "  ".join(f"{key}={labels[key]}" for key in sorted(labels))


def _format_time(timestamp: timestamp_pb2.Timestamp) -> str:
    """RFC 3339, or "" for an unset (all-zero) timestamp."""
    if timestamp.seconds == 0 and timestamp.nanos == 0:
        return ""
    return str(timestamp.ToJsonString())


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"
