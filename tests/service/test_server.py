"""The real grpc.aio server on port 0, called through the generated async stub and grpcurl."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.app import FitscoreServer, create_server
from server.settings import Settings

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[FitscoreServer]:
    server = await create_server(Settings(listen="127.0.0.1:0", video_root=tmp_path / "videos"))
    await server.wait_ready()
    yield server
    await server.stop(1.0)


@pytest.fixture
async def stub(running: FitscoreServer) -> AsyncIterator[pb_grpc.AssessmentServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.AssessmentServiceStub(channel)


async def test_health_serving(running: FitscoreServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(
            health_pb2.HealthCheckRequest(service="fitscore.v1.AssessmentService")
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_invalid_start_names_the_field(stub: pb_grpc.AssessmentServiceAsyncStub) -> None:
    request = pb.StartAssessmentRequest(camera_id="lane1", source_url="rtsp://127.0.0.1/x")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartAssessment(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("frame_count:")


async def _drain(stream: AsyncIterable[pb.AssessmentEvent]) -> None:
    async for _ in stream:
        pass


async def test_unknown_ids_are_not_found(stub: pb_grpc.AssessmentServiceAsyncStub) -> None:
    calls: list[Awaitable[object]] = [
        stub.GetAssessment(pb.GetAssessmentRequest(assessment_id="nope")),
        stub.Stop(pb.StopRequest(assessment_id="nope")),
        _drain(stub.StreamEvents(pb.StreamEventsRequest(assessment_id="nope"))),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_missing_id_is_invalid(stub: pb_grpc.AssessmentServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetAssessment(pb.GetAssessmentRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "assessment_id" in (caught.value.details() or "")


async def test_list_starts_empty(stub: pb_grpc.AssessmentServiceAsyncStub) -> None:
    answer = await stub.ListAssessments(pb.ListAssessmentsRequest())
    assert list(answer.assessments) == []


async def _grpcurl(*arguments: str) -> tuple[int, str, str]:
    """Run grpcurl without blocking the event loop that serves it."""
    process = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", *arguments, stdout=PIPE, stderr=PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_grpcurl_lists_and_describes(running: FitscoreServer) -> None:
    target = f"127.0.0.1:{running.port}"
    status, listing, errors = await _grpcurl(target, "list")
    assert status == 0, errors
    assert {
        "fitscore.v1.AssessmentService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(listing.split())
    status, described, errors = await _grpcurl(
        target, "describe", "fitscore.v1.StartAssessmentRequest"
    )
    assert status == 0, errors
    for field in ("camera_id", "source_url", "difficulty_level", "frame_count", "output_path"):
        assert field in described
    status, health, errors = await _grpcurl(target, "grpc.health.v1.Health/Check")
    assert json.loads(health)["status"] == "SERVING"
    status, _, errors = await _grpcurl(
        "-d",
        '{"camera_id": "lane1", "source_url": "http://127.0.0.1/x", "frame_count": 10}',
        target,
        "fitscore.v1.AssessmentService/StartAssessment",
    )
    assert status != 0
    assert "InvalidArgument" in errors
    assert "source_url" in errors


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "server", "serve", "--listen", f"127.0.0.1:{port}"]
    command += ["--video-root", str(tmp_path)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert f"serving on port {port}" in process.stdout.readline()
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_serve_refuses_unknown_config_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[engine]\nmax_batchsize = 3\n", encoding="utf-8")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "engine.max_batchsize" in result.stderr
    assert time.monotonic() - started < 30
