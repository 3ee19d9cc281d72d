"""The event log of one assessment: numbered, persisted, replayable, shared by every subscriber.

Sequences start at 1 and have no gaps. Every event is appended to a JSONL file as it happens
(protobuf JSON with proto field names, one event per line, flushed at once) so a crash loses
nothing already announced. Subscribers read from the in-memory list: a subscriber that reconnects
with the last sequence it saw gets every later event exactly once.

All methods run on the asyncio event loop thread (events from worker threads arrive through
``loop.call_soon_threadsafe``); nothing here blocks for long.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO

from google.protobuf import json_format

from client import assessment_pb2 as pb

logger = logging.getLogger(__name__)


class EventLogClosed(RuntimeError):
    """An event was appended after the log's Finished event."""


class EventLog:
    """Append-only, numbered events of one assessment with any number of live subscribers."""

    def __init__(
        self,
        assessment_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        jsonl_path: Path | None = None,
    ) -> None:
        self.assessment_id = assessment_id
        self._labels = dict(labels or {})
        self._events: list[pb.AssessmentEvent] = []
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._jsonl_path = jsonl_path
        self._jsonl: IO[str] | None = None
        if jsonl_path is not None:
            jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = jsonl_path.open("a", encoding="utf-8")

    @classmethod
    def restore(
        cls, assessment_id: str, events: list[pb.AssessmentEvent], *, jsonl_path: Path
    ) -> EventLog:
        """A log holding ``events`` read back from ``jsonl_path`` (appends go on after them)."""
        labels = dict(events[0].labels) if events else {}
        log = cls(assessment_id, labels=labels, jsonl_path=jsonl_path)
        log._events = list(events)
        if events and events[-1].WhichOneof("payload") == "finished":
            log._closed = True
            log._close_file()
        return log

    @property
    def last_sequence(self) -> int:
        return len(self._events)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def jsonl_path(self) -> Path | None:
        return self._jsonl_path

    def events(self, after_sequence: int = 0) -> list[pb.AssessmentEvent]:
        """The events with sequence > after_sequence, oldest first."""
        return self._events[max(after_sequence, 0) :]

    def append(self, event: pb.AssessmentEvent) -> pb.AssessmentEvent:
        """Number, timestamp, persist and publish ``event``; returns it as stored.

        The caller fills the payload and frame_index/media_offset; this sets assessment_id,
        sequence, time and labels. A Finished payload closes the log.
        """
        if self._closed:
            raise EventLogClosed(f"assessment {self.assessment_id}: event after Finished")
        event.assessment_id = self.assessment_id
        event.sequence = len(self._events) + 1
        if not event.HasField("time"):
            event.time.GetCurrentTime()
        event.labels.clear()
        event.labels.update(self._labels)
        self._events.append(event)
        finished = event.WhichOneof("payload") == "finished"
        self._persist(event, durable=finished)
        if finished:
            self._closed = True
            self._close_file()
        self._wake()
        return event

    def close(self) -> None:
        """End the log without a Finished event (server teardown); subscribers return."""
        self._closed = True
        self._close_file()
        self._wake()

    async def follow(self, after_sequence: int = 0) -> AsyncIterator[pb.AssessmentEvent]:
        """Yield the events after ``after_sequence``, then live ones, until the log closes."""
        next_index = max(after_sequence, 0)
        while True:
            while next_index < len(self._events):
                yield self._events[next_index]
                next_index += 1
            if self._closed:
                return
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    def _persist(self, event: pb.AssessmentEvent, *, durable: bool) -> None:
        if self._jsonl is None:
            return
        line = json_format.MessageToJson(event, preserving_proto_field_name=True, indent=None)
        try:
            self._jsonl.write(line + "\n")
            self._jsonl.flush()
            if durable:
                os.fsync(self._jsonl.fileno())
        except OSError as error:
            # The in-memory log stays authoritative; a full disk must not lose live events.
            logger.error(
                "event log %s: could not persist event %d: %s",
                self._jsonl_path,
                event.sequence,
                error,
                extra={"assessment_id": self.assessment_id},
            )

    def _close_file(self) -> None:
        if self._jsonl is not None:
            try:
                self._jsonl.close()
            except OSError as error:
                logger.error("event log %s: close failed: %s", self._jsonl_path, error)
            self._jsonl = None


def read_jsonl(path: Path) -> list[pb.AssessmentEvent]:
    """Read an event log written by :class:`EventLog` (a torn last line is ignored)."""
    events: list[pb.AssessmentEvent] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            events.append(json_format.Parse(line, pb.AssessmentEvent()))
    return events
