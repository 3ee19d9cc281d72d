"""A hand-written fake AssessmentService on a real grpc.aio server, for driving the `fitscore` CLI.

Tests put assessments and their events in, choose errors and stream drops, run the CLI against
`FakeServer.address`, and read back the requests the fake received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc

ASSESSMENT_ID = "a-0001"
CAMERA_ID = "lane-1"
VIDEO_PATH = "/videos/lane-1/a-0001.mp4"
FRAME_COUNT = 2440
LABELS = {"examinee_id": "E-42", "class": "3/1"}
DROP_DETAILS = "fake: connection dropped"


@dataclass(frozen=True)
class ScriptedError:
    code: grpc.StatusCode
    details: str


@dataclass
class FakeAssessmentService(pb_grpc.AssessmentServiceServicer):
    """Serves what the test scripted; records every request and its authorization header.

    `stream_drops`: each StreamEvents call takes the first entry (if any) and aborts with
    UNAVAILABLE after sending that many events. `replays_everything` makes StreamEvents ignore
    after_sequence, as a faulty server might, to show the client still prints nothing twice.
    """

    assessments: dict[str, pb.Assessment] = field(default_factory=dict)
    events: dict[str, list[pb.AssessmentEvent]] = field(default_factory=dict)
    start_error: ScriptedError | None = None
    stream_drops: list[int] = field(default_factory=list)
    replays_everything: bool = False
    start_requests: list[pb.StartAssessmentRequest] = field(default_factory=list)
    stream_requests: list[pb.StreamEventsRequest] = field(default_factory=list)
    stop_requests: list[pb.StopRequest] = field(default_factory=list)
    list_requests: list[pb.ListAssessmentsRequest] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)

    def add(self, assessment: pb.Assessment, events: Iterable[pb.AssessmentEvent] = ()) -> None:
        self.assessments[assessment.assessment_id] = assessment
        self.events[assessment.assessment_id] = list(events)

    async def StartAssessment(
        self,
        request: pb.StartAssessmentRequest,
        context: aio.ServicerContext[pb.StartAssessmentRequest, pb.StartAssessmentResponse],
    ) -> pb.StartAssessmentResponse:
        self._record_authorization(context)
        self.start_requests.append(request)
        if self.start_error is not None:
            await context.abort(self.start_error.code, self.start_error.details)
        return pb.StartAssessmentResponse(assessment=self.assessments[ASSESSMENT_ID])

    async def StreamEvents(
        self,
        request: pb.StreamEventsRequest,
        context: aio.ServicerContext[pb.StreamEventsRequest, pb.AssessmentEvent],
    ) -> AsyncIterator[pb.AssessmentEvent]:
        self._record_authorization(context)
        self.stream_requests.append(request)
        events = self.events.get(request.assessment_id)
        if events is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, _unknown(request.assessment_id))
        drop_after_events = self.stream_drops.pop(0) if self.stream_drops else None
        sent_count = 0
        for event in events:
            if event.sequence <= request.after_sequence and not self.replays_everything:
                continue
            if sent_count == drop_after_events:
                await context.abort(grpc.StatusCode.UNAVAILABLE, DROP_DETAILS)
            yield event
            sent_count += 1

    async def Stop(
        self,
        request: pb.StopRequest,
        context: aio.ServicerContext[pb.StopRequest, pb.StopResponse],
    ) -> pb.StopResponse:
        self._record_authorization(context)
        self.stop_requests.append(request)
        assessment = await self._find(request.assessment_id, context)
        return pb.StopResponse(assessment=assessment)

    async def GetAssessment(
        self,
        request: pb.GetAssessmentRequest,
        context: aio.ServicerContext[pb.GetAssessmentRequest, pb.GetAssessmentResponse],
    ) -> pb.GetAssessmentResponse:
        self._record_authorization(context)
        assessment = await self._find(request.assessment_id, context)
        return pb.GetAssessmentResponse(assessment=assessment)

    async def ListAssessments(
        self,
        request: pb.ListAssessmentsRequest,
        context: aio.ServicerContext[pb.ListAssessmentsRequest, pb.ListAssessmentsResponse],
    ) -> pb.ListAssessmentsResponse:
        self._record_authorization(context)
        self.list_requests.append(request)
        return pb.ListAssessmentsResponse(assessments=list(self.assessments.values()))

    async def _find(
        self, assessment_id: str, context: aio.ServicerContext[Any, Any]
    ) -> pb.Assessment:
        assessment = self.assessments.get(assessment_id)
        if assessment is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, _unknown(assessment_id))
        return assessment

    def _record_authorization(self, context: aio.ServicerContext[Any, Any]) -> None:
        metadata = dict(context.invocation_metadata() or ())
        value = metadata.get("authorization")
        self.authorizations.append(None if value is None else str(value))


def _unknown(assessment_id: str) -> str:
    return f"no assessment has id {assessment_id!r}"


@dataclass(frozen=True)
class FakeServer:
    service: FakeAssessmentService
    address: str


@asynccontextmanager
async def serve_fake(
    service: FakeAssessmentService,
    server_credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[FakeServer]:
    """Run `service` on 127.0.0.1 with a free port; plaintext unless credentials are given."""
    server = aio.server()
    pb_grpc.add_AssessmentServiceServicer_to_server(service, server)
    if server_credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", server_credentials)
    await server.start()
    try:
        yield FakeServer(service=service, address=f"127.0.0.1:{port}")
    finally:
        await server.stop(grace=None)


def scripted_assessment(
    *,
    state: pb.AssessmentState.ValueType = pb.ASSESSMENT_STATE_RUNNING,
    end_reason: pb.EndReason.ValueType = pb.END_REASON_UNSPECIFIED,
) -> pb.Assessment:
    assessment = pb.Assessment(
        assessment_id=ASSESSMENT_ID,
        camera_id=CAMERA_ID,
        exercise=pb.EXERCISE_PUSH_UP,
        difficulty_level=5,
        state=state,
        frame_count=FRAME_COUNT,
        labels=LABELS,
        video_path=VIDEO_PATH,
        end_reason=end_reason,
    )
    assessment.create_time.FromSeconds(1_700_000_000)
    return assessment


def scripted_events(
    end_reason: pb.EndReason.ValueType = pb.END_REASON_COMPLETED,
) -> list[pb.AssessmentEvent]:
    """Started, RepCounted, Foul, Warning, Progress, RepCounted, Finished: sequences 1..7."""
    evidence = pb.RepEvidence(
        rep_index=1,
        start_frame=180,
        bottom_frame=215,
        end_frame=248,
        measures={"min_elbow_angle_deg": 82.4, "lockout_elbow_angle_deg": 171.0},
    )
    evidence.end_offset.FromMilliseconds(12_400)
    foul_evidence = pb.RepEvidence(rep_index=2, measures={"min_elbow_angle_deg": 112.0})
    final = scripted_assessment(state=pb.ASSESSMENT_STATE_FINISHED, end_reason=end_reason)
    final.rep_count = 2
    final.fouls["FOUL_CODE_NOT_LOW_ENOUGH"] = 1
    if end_reason == pb.END_REASON_VIOLATION:
        final.violation = pb.VIOLATION_CODE_RESTING
        final.end_detail = "rested at the bottom for 5.2 s"
    started = pb.Started(camera_id=CAMERA_ID, frame_width=1280, frame_height=720, camera_fps=25.0)
    foul = pb.Foul(
        code=pb.FOUL_CODE_NOT_LOW_ENOUGH,
        detail="elbow reached 112°, needs ≤ 90°",
        evidence=foul_evidence,
    )
    warning = pb.Warning(code=pb.WARNING_CODE_CAMERA_RECONNECTING, detail="no frame for 2.0 s")
    progress = pb.Progress(
        frames_received=600, frames_judged=598, frames_skipped=2, rep_count=1, phase=pb.PHASE_DOWN
    )
    payloads: list[tuple[int, pb.AssessmentEvent]] = [  # (media offset in ms or -1, event)
        (0, pb.AssessmentEvent(started=started)),
        (12_400, pb.AssessmentEvent(rep_counted=pb.RepCounted(rep_count=1, evidence=evidence))),
        (15_000, pb.AssessmentEvent(foul=foul)),
        (20_140, pb.AssessmentEvent(warning=warning)),
        (30_000, pb.AssessmentEvent(progress=progress)),
        (41_960, pb.AssessmentEvent(rep_counted=pb.RepCounted(rep_count=2))),
        (-1, pb.AssessmentEvent(finished=pb.Finished(assessment=final))),
    ]
    events: list[pb.AssessmentEvent] = []
    for sequence, (offset_ms, event) in enumerate(payloads, start=1):
        event.assessment_id = ASSESSMENT_ID
        event.sequence = sequence
        event.time.FromSeconds(1_700_000_000 + sequence)
        event.labels.update(LABELS)
        if offset_ms >= 0:
            event.frame_index = offset_ms // 50
            event.media_offset.FromMilliseconds(offset_ms)
        else:
            event.frame_index = -1
        events.append(event)
    return events
