"""A real assessment end to end: RTSP camera → engine → judge → events, video, keypoints."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import grpc
import numpy as np
import pytest

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.app import FitscoreServer
from server.events import read_jsonl
from tests.e2e.conftest import PUSHUP_FRAMES, collect, payloads
from tests.support.rtsp import RtspCameraFactory

pytestmark = [pytest.mark.rtsp, pytest.mark.slow]


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_push_ups_counted_live(
    stub: pb_grpc.AssessmentServiceAsyncStub,
    rtsp_camera: RtspCameraFactory,
    pushup_clip: Path,
) -> None:
    camera = rtsp_camera({"/lane1": pushup_clip}, loop=True)
    started = await stub.StartAssessment(
        pb.StartAssessmentRequest(
            camera_id="lane1",
            source_url=camera.url("/lane1"),
            frame_count=PUSHUP_FRAMES,
            output_path="exam/lane1.mp4",
            labels={"examinee_id": "42"},
        )
    )
    assessment = started.assessment
    assert assessment.state in (pb.ASSESSMENT_STATE_PENDING, pb.ASSESSMENT_STATE_RUNNING)
    assert assessment.difficulty_level == 5
    events = await asyncio.wait_for(collect(stub, assessment.assessment_id), timeout=90)

    kinds = payloads(events)
    assert kinds[0] == "started"
    assert kinds[-1] == "finished"
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert all(event.labels["examinee_id"] == "42" for event in events)
    reps = [event.rep_counted for event in events if event.HasField("rep_counted")]
    assert [rep.rep_count for rep in reps] == [1, 2, 3, 4]
    for rep in reps:
        evidence = rep.evidence
        assert evidence.start_frame <= evidence.bottom_frame <= evidence.end_frame
        assert evidence.measures["min_elbow_angle_deg"] < 120
    assert "progress" in kinds

    final = events[-1].finished.assessment
    assert final.end_reason == pb.END_REASON_COMPLETED
    assert final.rep_count == 4
    assert final.frames_received == PUSHUP_FRAMES
    assert final.frames_judged + final.frames_skipped == PUSHUP_FRAMES
    video = Path(final.video_path)
    assert video.name == "lane1.mp4"
    assert not video.with_name("lane1.mp4.part").exists()
    assert decoded_frames(video) >= PUSHUP_FRAMES
    assert read_jsonl(Path(final.events_path)) == events
    with np.load(final.pose_path) as poses:
        assert poses["keypoints"].shape == (final.frames_judged, 33, 5)

    again = await stub.GetAssessment(pb.GetAssessmentRequest(assessment_id=final.assessment_id))
    assert again.assessment.state == pb.ASSESSMENT_STATE_FINISHED
    assert again.assessment.rep_count == 4


async def test_stop_midway_keeps_a_playable_video(
    stub: pb_grpc.AssessmentServiceAsyncStub,
    rtsp_camera: RtspCameraFactory,
    pushup_clip: Path,
) -> None:
    camera = rtsp_camera({"/lane2": pushup_clip}, loop=True)
    started = await stub.StartAssessment(
        pb.StartAssessmentRequest(
            camera_id="lane2", source_url=camera.url("/lane2"), frame_count=2440
        )
    )
    assessment_id = started.assessment.assessment_id
    follower = asyncio.create_task(collect(stub, assessment_id))
    await asyncio.sleep(4)
    stopped = await stub.Stop(pb.StopRequest(assessment_id=assessment_id, reason="examiner"))
    final = stopped.assessment
    assert final.state == pb.ASSESSMENT_STATE_FINISHED
    assert final.end_reason == pb.END_REASON_CANCELLED
    assert "examiner" in final.end_detail
    assert 0 < final.frames_received < 2440
    assert decoded_frames(Path(final.video_path)) > 0
    events = await asyncio.wait_for(follower, timeout=10)
    assert events[-1].finished.assessment.end_reason == pb.END_REASON_CANCELLED
    # Stopping again returns the same final state.
    again = await stub.Stop(pb.StopRequest(assessment_id=assessment_id))
    assert again.assessment == final


async def test_resumed_subscriber_gets_every_event_once(
    stub: pb_grpc.AssessmentServiceAsyncStub,
    rtsp_camera: RtspCameraFactory,
    pushup_clip: Path,
) -> None:
    camera = rtsp_camera({"/lane3": pushup_clip}, loop=True)
    started = await stub.StartAssessment(
        pb.StartAssessmentRequest(
            camera_id="lane3", source_url=camera.url("/lane3"), frame_count=160
        )
    )
    assessment_id = started.assessment.assessment_id
    seen: list[pb.AssessmentEvent] = []
    stream = stub.StreamEvents(pb.StreamEventsRequest(assessment_id=assessment_id))
    async for event in stream:
        seen.append(event)
        if len(seen) == 3:
            break
    stream.cancel()  # the subscriber goes away mid-assessment
    await asyncio.sleep(1)
    seen += await asyncio.wait_for(
        collect(stub, assessment_id, after_sequence=seen[-1].sequence), timeout=60
    )
    assert [event.sequence for event in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].HasField("finished")


async def test_busy_camera_and_idempotent_start(
    stub: pb_grpc.AssessmentServiceAsyncStub,
    rtsp_camera: RtspCameraFactory,
    pushup_clip: Path,
) -> None:
    camera = rtsp_camera({"/lane4": pushup_clip}, loop=True)
    request = pb.StartAssessmentRequest(
        camera_id="lane4",
        source_url=camera.url("/lane4"),
        frame_count=2440,
        assessment_id="exam-7",
    )
    first = await stub.StartAssessment(request)
    again = await stub.StartAssessment(request)
    assert again.assessment.assessment_id == first.assessment.assessment_id == "exam-7"
    changed = pb.StartAssessmentRequest()
    changed.CopyFrom(request)
    changed.difficulty_level = 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartAssessment(changed)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    other = pb.StartAssessmentRequest()
    other.CopyFrom(request)
    other.assessment_id = "exam-8"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartAssessment(other)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await stub.Stop(pb.StopRequest(assessment_id="exam-7"))


async def test_unreachable_camera_is_a_clear_error(
    stub: pb_grpc.AssessmentServiceAsyncStub, fitscore: FitscoreServer
) -> None:
    request = pb.StartAssessmentRequest(
        camera_id="lane5", source_url="rtsp://127.0.0.1:9/none", frame_count=100
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartAssessment(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "lane5" in (caught.value.details() or "")
    listed = await stub.ListAssessments(pb.ListAssessmentsRequest())
    assert list(listed.assessments) == []
