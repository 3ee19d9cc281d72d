"""A room: several cameras on one engine, a camera that drops, the CLI, and a server shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import av
import pytest

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.events import read_jsonl
from tests.e2e.conftest import PUSHUP_FRAMES, collect
from tests.support.rtsp import RtspCameraFactory

pytestmark = [pytest.mark.rtsp, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


async def test_three_cameras_each_count_their_own(
    stub: pb_grpc.AssessmentServiceAsyncStub,
    rtsp_camera: RtspCameraFactory,
    pushup_clip: Path,
) -> None:
    lanes = ("lane1", "lane2", "lane3")
    camera = rtsp_camera({f"/{lane}": pushup_clip for lane in lanes}, loop=True)
    starts = [
        stub.StartAssessment(
            pb.StartAssessmentRequest(
                camera_id=lane, source_url=camera.url(f"/{lane}"), frame_count=PUSHUP_FRAMES
            )
        )
        for lane in lanes
    ]
    started = await asyncio.gather(*starts)
    results = await asyncio.wait_for(
        asyncio.gather(*(collect(stub, item.assessment.assessment_id) for item in started)),
        timeout=120,
    )
    for events in results:
        final = events[-1].finished.assessment
        assert final.end_reason == pb.END_REASON_COMPLETED
        assert final.rep_count == 4, (final.camera_id, final.fouls, final.frames_skipped)


async def test_camera_restart_mid_assessment_warns_and_goes_on(
    stub: pb_grpc.AssessmentServiceAsyncStub,
    rtsp_camera: RtspCameraFactory,
    pushup_clip: Path,
) -> None:
    camera = rtsp_camera({"/lane1": pushup_clip}, loop=True)
    started = await stub.StartAssessment(
        pb.StartAssessmentRequest(
            camera_id="lane1", source_url=camera.url("/lane1"), frame_count=200
        )
    )
    assessment_id = started.assessment.assessment_id
    follower = asyncio.create_task(collect(stub, assessment_id))
    await asyncio.sleep(3)
    await asyncio.to_thread(camera.kill)
    await asyncio.sleep(1.5)
    await asyncio.to_thread(camera.restart)
    events = await asyncio.wait_for(follower, timeout=90)
    warnings = [event.warning.code for event in events if event.HasField("warning")]
    assert pb.WARNING_CODE_CAMERA_RECONNECTING in warnings
    assert pb.WARNING_CODE_CAMERA_RECOVERED in warnings
    final = events[-1].finished.assessment
    assert final.end_reason == pb.END_REASON_COMPLETED, final.end_detail
    assert final.frames_received == 200


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_cli_follows_an_assessment(
    rtsp_camera: RtspCameraFactory, pushup_clip: Path, tmp_path: Path
) -> None:
    camera = rtsp_camera({"/lane1": pushup_clip}, loop=True)
    port = _free_port()
    command = [sys.executable, "-m", "server", "serve", "--listen", f"127.0.0.1:{port}"]
    command += ["--video-root", str(tmp_path / "videos")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as server:
        try:
            assert server.stdout is not None
            assert b"serving on port" in server.stdout.readline()
            assert b"ready" in server.stdout.readline()
            client = [sys.executable, "-m", "client.cli", "--server", f"127.0.0.1:{port}"]
            readable = subprocess.run(
                [
                    *client,
                    *("start", "--camera", "lane1", "--source", camera.url("/lane1")),
                    *("--frames", str(PUSHUP_FRAMES), "--follow"),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd=ROOT,
            )
            assert readable.returncode == 0, readable.stderr
            lines = readable.stdout.splitlines()
            assert sum(" counted" in line for line in lines) == 4
            assert "COMPLETED" in lines[-1]
            as_json = subprocess.run(
                [*client, "--json", "list"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                cwd=ROOT,
            )
            assert as_json.returncode == 0, as_json.stderr
            listed = [json.loads(line) for line in as_json.stdout.splitlines()]
            assert listed[0]["rep_count"] == 4
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def test_sigterm_finishes_every_assessment(
    rtsp_camera: RtspCameraFactory, pushup_clip: Path, tmp_path: Path
) -> None:
    camera = rtsp_camera({"/lane1": pushup_clip, "/lane2": pushup_clip}, loop=True)
    port = _free_port()
    video_root = tmp_path / "videos"
    command = [sys.executable, "-m", "server", "serve", "--listen", f"127.0.0.1:{port}"]
    command += ["--video-root", str(video_root)]
    env = dict(os.environ)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    ) as server:
        assert server.stdout is not None
        assert b"serving on port" in server.stdout.readline()

        async def start_two() -> list[pb.Assessment]:
            import grpc

            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.AssessmentServiceStub(channel)
                for _ in range(100):  # the engine warms up in the background
                    try:
                        started = [
                            await stub.StartAssessment(
                                pb.StartAssessmentRequest(
                                    camera_id=lane,
                                    source_url=camera.url(f"/{lane}"),
                                    frame_count=2440,
                                )
                            )
                            for lane in ("lane1", "lane2")
                        ]
                        break
                    except grpc.aio.AioRpcError as error:
                        if error.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        await asyncio.sleep(0.2)
                await asyncio.sleep(3)
                return [item.assessment for item in started]

        assessments = asyncio.run(start_two())
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    for assessment in assessments:
        events = read_jsonl(Path(assessment.events_path))
        assert events[-1].HasField("finished")
        final = events[-1].finished.assessment
        assert final.end_reason == pb.END_REASON_SHUTDOWN
        assert Path(final.video_path).is_file()
        assert not Path(final.video_path + ".part").exists()


def test_evidence_survives_a_killed_server(
    rtsp_camera: RtspCameraFactory, pushup_clip: Path, tmp_path: Path
) -> None:
    """SIGKILL mid-assessment: the partial video plays, the events are on disk, and the next
    start-up finalises the video under its own name."""
    camera = rtsp_camera({"/lane1": pushup_clip}, loop=True)
    video_root = tmp_path / "videos"
    port = _free_port()
    command = [sys.executable, "-m", "server", "serve", "--listen", f"127.0.0.1:{port}"]
    command += ["--video-root", str(video_root)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as server:
        assert server.stdout is not None
        assert b"serving on port" in server.stdout.readline()
        assert b"ready" in server.stdout.readline()

        async def start_and_wait() -> pb.Assessment:
            import grpc

            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.AssessmentServiceStub(channel)
                started = await stub.StartAssessment(
                    pb.StartAssessmentRequest(
                        camera_id="lane1",
                        source_url=camera.url("/lane1"),
                        frame_count=2440,
                        output_path="killed.mp4",
                    )
                )
                await asyncio.sleep(5)
                return started.assessment

        assessment = asyncio.run(start_and_wait())
        server.kill()
        server.wait(10)
    video = Path(assessment.video_path)
    partial = video.with_name(video.name + ".part")
    assert partial.is_file()
    assert not video.exists()
    with av.open(str(partial)) as container:
        frames_in_partial = sum(1 for _ in container.decode(video=0))
    assert frames_in_partial >= 3 * 20  # ≥ 3 of the 5 seconds: at most a fragment is lost
    events = read_jsonl(Path(assessment.events_path))
    assert events[0].HasField("started")
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))

    # The next server finalises the leftover video and ends the interrupted assessment, so a
    # backend resuming its stream gets the end of it rather than NOT_FOUND.
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as server:
        assert server.stdout is not None
        assert b"serving on port" in server.stdout.readline()
        assert b"ready" in server.stdout.readline()

        async def resume() -> tuple[pb.Assessment, list[pb.AssessmentEvent]]:
            import grpc

            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.AssessmentServiceStub(channel)
                got = await stub.GetAssessment(
                    pb.GetAssessmentRequest(assessment_id=assessment.assessment_id)
                )
                rest = await collect(stub, assessment.assessment_id, events[-1].sequence)
                return got.assessment, rest

        final, rest = asyncio.run(resume())
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    assert final.state == pb.ASSESSMENT_STATE_FINISHED
    assert final.end_reason == pb.END_REASON_FAILED
    assert final.camera_id == "lane1"
    assert final.frame_count == 2440
    assert [event.sequence for event in rest] == [events[-1].sequence + 1]
    assert rest[0].finished.assessment.end_reason == pb.END_REASON_FAILED
    assert read_jsonl(Path(assessment.events_path))[-1] == rest[0]
    assert video.is_file()
    assert not partial.exists()
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= frames_in_partial - 25
