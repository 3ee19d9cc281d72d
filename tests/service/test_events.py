"""The event log: sequences from 1 without gaps, replay, many subscribers, JSONL on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client import assessment_pb2 as pb
from server.events import EventLog, EventLogClosed, read_jsonl


def _warning(detail: str) -> pb.AssessmentEvent:
    return pb.AssessmentEvent(
        frame_index=-1, warning=pb.Warning(code=pb.WARNING_CODE_PAUSE, detail=detail)
    )


def _finished(rep_count: int) -> pb.AssessmentEvent:
    assessment = pb.Assessment(rep_count=rep_count, end_reason=pb.END_REASON_COMPLETED)
    return pb.AssessmentEvent(finished=pb.Finished(assessment=assessment))


async def _collect(log: EventLog, after: int) -> list[pb.AssessmentEvent]:
    return [event async for event in log.follow(after)]


def test_sequences_start_at_one_without_gaps() -> None:
    log = EventLog("a1", labels={"examinee": "42"})
    stored = [log.append(_warning(str(number))) for number in range(5)]
    assert [event.sequence for event in stored] == [1, 2, 3, 4, 5]
    assert all(event.assessment_id == "a1" for event in stored)
    assert all(event.labels["examinee"] == "42" for event in stored)
    assert log.last_sequence == 5
    assert [event.sequence for event in log.events(after_sequence=3)] == [4, 5]


async def test_replay_then_live_for_every_subscriber() -> None:
    log = EventLog("a1")
    log.append(_warning("one"))
    log.append(_warning("two"))
    from_start = asyncio.create_task(_collect(log, 0))
    from_two = asyncio.create_task(_collect(log, 2))
    late = asyncio.create_task(_collect(log, 1))
    await asyncio.sleep(0)
    log.append(_warning("three"))
    await asyncio.sleep(0)
    log.append(_finished(3))
    results = await asyncio.wait_for(asyncio.gather(from_start, from_two, late), timeout=5)
    assert [event.sequence for event in results[0]] == [1, 2, 3, 4]
    assert [event.sequence for event in results[1]] == [3, 4]
    assert [event.sequence for event in results[2]] == [2, 3, 4]
    assert results[0][-1].WhichOneof("payload") == "finished"


async def test_follow_ends_at_once_on_a_finished_log() -> None:
    log = EventLog("a1")
    log.append(_finished(0))
    assert [event.sequence for event in await _collect(log, 0)] == [1]
    assert await _collect(log, 1) == []


async def test_cancelled_subscriber_does_not_disturb_others() -> None:
    log = EventLog("a1")
    cancelled = asyncio.create_task(_collect(log, 0))
    survivor = asyncio.create_task(_collect(log, 0))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    log.append(_warning("x"))
    log.append(_finished(1))
    assert [event.sequence for event in await asyncio.wait_for(survivor, 5)] == [1, 2]
    with pytest.raises(asyncio.CancelledError):
        await cancelled


def test_nothing_after_finished() -> None:
    log = EventLog("a1")
    log.append(_finished(0))
    with pytest.raises(EventLogClosed):
        log.append(_warning("late"))


def test_jsonl_holds_every_event_as_it_happens(tmp_path: Path) -> None:
    path = tmp_path / "lane1" / "a1.mp4.events.jsonl"
    log = EventLog("a1", jsonl_path=path, labels={"k": "v"})
    log.append(_warning("one"))
    # Readable before the log is finished: a crash now keeps event 1.
    assert [event.sequence for event in read_jsonl(path)] == [1]
    log.append(_finished(7))
    events = read_jsonl(path)
    assert [event.sequence for event in events] == [1, 2]
    assert events[1].finished.assessment.rep_count == 7
    assert events[0].labels["k"] == "v"
    assert events == log.events()


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "a.events.jsonl"
    log = EventLog("a1", jsonl_path=path)
    log.append(_warning("one"))
    log.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"assessment_id": "a1", "seq')
    assert [event.sequence for event in read_jsonl(path)] == [1]
