"""Assessments an earlier run of the server left behind, read back at start-up.

Every event log is on disk as it happens, so after a crash (or a power cut) the server can still
answer for recent assessments: a log that ends with Finished is served as it is; one that does not
gets a Finished event with END_REASON_FAILED, built from what the log holds, so a backend that
resumes its stream after the restart receives the end instead of NOT_FOUND.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.json_format import ParseError
from google.protobuf.message import DecodeError

from client import assessment_pb2 as pb
from server.events import EventLog, read_jsonl

logger = logging.getLogger(__name__)

EVENTS_SUFFIX = ".events.jsonl"
INTERRUPTED_DETAIL = "the server stopped before this assessment finished (recovered at start-up)"


@dataclass(frozen=True)
class RestoredAssessment:
    record: pb.Assessment
    log: EventLog
    interrupted: bool
    """True when this start-up wrote the Finished event."""


def recent_event_logs(video_root: Path, max_age_s: float) -> Iterator[Path]:
    """Event logs under ``video_root`` written within ``max_age_s``."""
    oldest = time.time() - max_age_s
    for path in video_root.rglob("*" + EVENTS_SUFFIX):
        try:
            if path.is_file() and path.stat().st_mtime >= oldest:
                yield path
        except OSError:
            continue


def restore(path: Path) -> RestoredAssessment | None:
    """Read one event log back; None when it holds no assessment (nothing started)."""
    try:
        events = read_jsonl(path)
    except (OSError, ParseError, DecodeError) as error:
        logger.warning("event log %s is unreadable: %s", path, error)
        return None
    if not events:
        return None
    assessment_id = events[0].assessment_id
    last = events[-1]
    if last.HasField("finished"):
        record = pb.Assessment()
        record.CopyFrom(last.finished.assessment)
        return RestoredAssessment(
            record, EventLog.restore(assessment_id, events, jsonl_path=path), False
        )
    started = next((event.started for event in events if event.HasField("started")), None)
    if started is None or not started.HasField("assessment"):
        return None
    record = _record_from(started.assessment, events)
    log = EventLog.restore(assessment_id, events, jsonl_path=path)
    finished = pb.AssessmentEvent(frame_index=-1)
    finished.finished.assessment.CopyFrom(record)
    finished.finished.assessment.last_sequence = log.last_sequence + 1
    log.append(finished)
    record.last_sequence = log.last_sequence
    return RestoredAssessment(record, log, True)


def _record_from(started: pb.Assessment, events: list[pb.AssessmentEvent]) -> pb.Assessment:
    """The final state of an interrupted assessment, from its events."""
    record = pb.Assessment()
    record.CopyFrom(started)
    for event in events:
        payload = event.WhichOneof("payload")
        if payload == "rep_counted":
            record.rep_count = event.rep_counted.rep_count
        elif payload == "foul":
            name = pb.FoulCode.Name(event.foul.code)
            record.fouls[name] = record.fouls.get(name, 0) + 1
        elif payload == "progress":
            record.frames_received = event.progress.frames_received
            record.frames_judged = event.progress.frames_judged
            record.frames_skipped = event.progress.frames_skipped
    record.state = pb.ASSESSMENT_STATE_FINISHED
    record.end_reason = pb.END_REASON_FAILED
    record.end_detail = INTERRUPTED_DETAIL
    record.pose_path = ""  # the keypoints are written at the end: they were lost
    record.end_time.GetCurrentTime()
    return record
