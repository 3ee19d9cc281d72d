"""Event logs left by an earlier run are read back; interrupted ones get their Finished event."""

from __future__ import annotations

import os
import time
from pathlib import Path

from client import assessment_pb2 as pb
from server.events import EventLog, read_jsonl
from server.recovery import INTERRUPTED_DETAIL, recent_event_logs, restore


def _write_interrupted(path: Path) -> list[pb.AssessmentEvent]:
    log = EventLog("a1", labels={"examinee_id": "7"}, jsonl_path=path)
    started = pb.AssessmentEvent(frame_index=0)
    started.started.camera_id = "lane1"
    started.started.assessment.CopyFrom(
        pb.Assessment(
            assessment_id="a1",
            camera_id="lane1",
            exercise=pb.EXERCISE_PUSH_UP,
            difficulty_level=5,
            frame_count=2440,
            state=pb.ASSESSMENT_STATE_RUNNING,
            pose_path=str(path.with_name("a1.mp4.pose.npz")),
        )
    )
    log.append(started)
    for count in (1, 2):
        rep = pb.AssessmentEvent(frame_index=count * 40)
        rep.rep_counted.rep_count = count
        log.append(rep)
    foul = pb.AssessmentEvent(frame_index=130)
    foul.foul.code = pb.FOUL_CODE_NOT_LOW_ENOUGH
    log.append(foul)
    progress = pb.AssessmentEvent(frame_index=140)
    progress.progress.frames_received = 141
    progress.progress.frames_judged = 139
    progress.progress.frames_skipped = 2
    log.append(progress)
    # The process dies here: no Finished event is ever written (close() only releases the file).
    log.close()
    return log.events()


def test_interrupted_log_is_finished_failed(tmp_path: Path) -> None:
    path = tmp_path / "a1.mp4.events.jsonl"
    written = _write_interrupted(path)
    restored = restore(path)
    assert restored is not None
    assert restored.interrupted
    record = restored.record
    assert record.state == pb.ASSESSMENT_STATE_FINISHED
    assert record.end_reason == pb.END_REASON_FAILED
    assert record.end_detail == INTERRUPTED_DETAIL
    assert record.rep_count == 2
    assert dict(record.fouls) == {"FOUL_CODE_NOT_LOW_ENOUGH": 1}
    assert (record.frames_received, record.frames_judged, record.frames_skipped) == (141, 139, 2)
    assert record.pose_path == ""
    on_disk = read_jsonl(path)
    assert on_disk[:-1] == written
    assert on_disk[-1].finished.assessment.end_reason == pb.END_REASON_FAILED
    assert on_disk[-1].sequence == len(written) + 1
    assert on_disk[-1].labels["examinee_id"] == "7"
    assert restored.log.closed
    # A second start-up finds it finished and leaves it as it is.
    again = restore(path)
    assert again is not None
    assert not again.interrupted
    assert read_jsonl(path) == on_disk


def test_log_without_a_start_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "b.mp4.events.jsonl"
    log = EventLog("b", jsonl_path=path)
    warning = pb.AssessmentEvent(frame_index=-1)
    warning.warning.code = pb.WARNING_CODE_CAMERA_RECONNECTING
    log.append(warning)
    log.close()
    assert restore(path) is None
    assert len(read_jsonl(path)) == 1


def test_unreadable_log_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "c.mp4.events.jsonl"
    path.write_text("not json\n", encoding="utf-8")
    assert restore(path) is None


def test_only_recent_logs_are_read(tmp_path: Path) -> None:
    recent = tmp_path / "new.mp4.events.jsonl"
    old = tmp_path / "deep" / "old.mp4.events.jsonl"
    old.parent.mkdir()
    for path in (recent, old):
        path.write_text("", encoding="utf-8")
    day_ago = time.time() - 86400
    os.utime(old, (day_ago, day_ago))
    assert list(recent_event_logs(tmp_path, max_age_s=3600)) == [recent]
