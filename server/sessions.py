"""Assessments held by the server: their state, their event logs, their life from Start to Finished.

The session manager is the only owner of assessment state. The gRPC layer asks it; worker threads
(cameras, inference) reach it only through the event loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from client import assessment_pb2 as pb
from server.admission import AssessmentPlan
from server.errors import NotFound, Unimplemented
from server.events import EventLog
from server.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class _Held:
    """One assessment as the manager holds it."""

    assessment: pb.Assessment
    log: EventLog
    finished_monotonic: float | None = None


class SessionManager:
    """Creates, tracks, stops and forgets assessments."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._held: dict[str, _Held] = {}

    async def start(self, plan: AssessmentPlan) -> pb.Assessment:
        raise Unimplemented(
            "StartAssessment: the request is valid, but camera sessions are not built in this "
            f"server yet (camera {plan.camera_id!r} was not opened)"
        )

    def get(self, assessment_id: str) -> pb.Assessment:
        held = self._find(assessment_id)
        copy = pb.Assessment()
        copy.CopyFrom(held.assessment)
        copy.last_sequence = held.log.last_sequence
        return copy

    def list(
        self,
        *,
        camera_id: str = "",
        state: pb.AssessmentState.ValueType = pb.ASSESSMENT_STATE_UNSPECIFIED,
    ) -> list[pb.Assessment]:
        self._forget_expired()
        chosen = [
            self.get(assessment_id)
            for assessment_id, held in self._held.items()
            if (not camera_id or held.assessment.camera_id == camera_id)
            and (not state or held.assessment.state == state)
        ]
        chosen.sort(key=lambda item: item.create_time.ToNanoseconds(), reverse=True)
        return chosen

    def event_log(self, assessment_id: str) -> EventLog:
        return self._find(assessment_id).log

    async def stop(self, assessment_id: str, reason: str) -> pb.Assessment:
        held = self._find(assessment_id)
        if held.assessment.state == pb.ASSESSMENT_STATE_FINISHED:
            return self.get(assessment_id)
        raise Unimplemented("Stop: running assessments are not built in this server yet")

    async def shutdown(self) -> None:
        for held in self._held.values():
            if not held.log.closed:
                held.log.close()

    def _find(self, assessment_id: str) -> _Held:
        self._forget_expired()
        held = self._held.get(assessment_id)
        if held is None:
            raise NotFound(f"no assessment with id {assessment_id!r}")
        return held

    def _forget_expired(self) -> None:
        now = time.monotonic()
        retention_s = self._settings.limits.retention_s
        expired = [
            assessment_id
            for assessment_id, held in self._held.items()
            if held.finished_monotonic is not None and now - held.finished_monotonic > retention_s
        ]
        for assessment_id in expired:
            del self._held[assessment_id]
