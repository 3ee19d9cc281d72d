"""The gRPC face of fitscore: AssessmentService on grpc.aio, thin over :mod:`server.sessions`.

Each RPC checks its request, asks the session manager, and turns a :class:`ServiceError` into the
status code it names. Nothing here blocks the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.admission import ID_PATTERN, admit
from server.errors import InvalidArgument, ResourceExhausted, ServiceError
from server.sessions import SessionManager
from server.settings import Settings

logger = logging.getLogger(__name__)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: ServiceError) -> None:
    await context.abort(error.code, error.message)


def _check_id(assessment_id: str) -> None:
    if not assessment_id:
        raise InvalidArgument("assessment_id", "required")
    if not ID_PATTERN.match(assessment_id):
        raise InvalidArgument("assessment_id", "1..64 characters of A-Z a-z 0-9 . _ -")


class AssessmentService(pb_grpc.AssessmentServiceServicer):
    """StartAssessment / StreamEvents / Stop (the user's three calls) and two read-only extras."""

    def __init__(self, settings: Settings, sessions: SessionManager) -> None:
        self._settings = settings
        self._sessions = sessions
        self._subscribers: dict[str, int] = {}

    async def StartAssessment(
        self,
        request: pb.StartAssessmentRequest,
        context: grpc.aio.ServicerContext[pb.StartAssessmentRequest, pb.StartAssessmentResponse],
    ) -> pb.StartAssessmentResponse:
        try:
            repeated = bool(request.assessment_id) and self._sessions.knows(request.assessment_id)
            plan = admit(request, self._settings, repeated=repeated)
            assessment = await self._sessions.start(plan)
        except ServiceError as error:
            await _abort(context, error)
            raise  # unreachable: abort raises
        return pb.StartAssessmentResponse(assessment=assessment)

    async def StreamEvents(
        self,
        request: pb.StreamEventsRequest,
        context: grpc.aio.ServicerContext[pb.StreamEventsRequest, pb.AssessmentEvent],
    ) -> AsyncIterator[pb.AssessmentEvent]:
        try:
            _check_id(request.assessment_id)
            if request.after_sequence < 0:
                raise InvalidArgument("after_sequence", "must be ≥ 0")
            log = self._sessions.event_log(request.assessment_id)
            open_streams = self._subscribers.get(request.assessment_id, 0)
            if open_streams >= self._settings.limits.max_subscribers:
                raise ResourceExhausted(
                    f"assessment {request.assessment_id} already has {open_streams} subscribers"
                )
        except ServiceError as error:
            await _abort(context, error)
            return
        self._subscribers[request.assessment_id] = open_streams + 1
        try:
            async for event in log.follow(request.after_sequence):
                yield event
        finally:
            remaining = self._subscribers[request.assessment_id] - 1
            if remaining:
                self._subscribers[request.assessment_id] = remaining
            else:
                del self._subscribers[request.assessment_id]

    async def Stop(
        self,
        request: pb.StopRequest,
        context: grpc.aio.ServicerContext[pb.StopRequest, pb.StopResponse],
    ) -> pb.StopResponse:
        try:
            _check_id(request.assessment_id)
            assessment = await self._sessions.stop(request.assessment_id, request.reason)
        except ServiceError as error:
            await _abort(context, error)
            raise
        return pb.StopResponse(assessment=assessment)

    async def GetAssessment(
        self,
        request: pb.GetAssessmentRequest,
        context: grpc.aio.ServicerContext[pb.GetAssessmentRequest, pb.GetAssessmentResponse],
    ) -> pb.GetAssessmentResponse:
        try:
            _check_id(request.assessment_id)
            assessment = self._sessions.get(request.assessment_id)
        except ServiceError as error:
            await _abort(context, error)
            raise
        return pb.GetAssessmentResponse(assessment=assessment)

    async def ListAssessments(
        self,
        request: pb.ListAssessmentsRequest,
        context: grpc.aio.ServicerContext[pb.ListAssessmentsRequest, pb.ListAssessmentsResponse],
    ) -> pb.ListAssessmentsResponse:
        assessments = self._sessions.list(camera_id=request.camera_id, state=request.state)
        return pb.ListAssessmentsResponse(assessments=assessments)
