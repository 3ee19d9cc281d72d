"""Bearer token, TLS and mutual TLS on the real server; the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.app import FitscoreServer, create_server
from server.settings import SecuritySettings, Settings, SettingsError
from tests.service.fakes import FakeEngine

TOKEN = "s3cret-token-for-tests-0123456789"


async def _serve(settings: Settings) -> FitscoreServer:
    server = await create_server(settings, engine_factory=FakeEngine)
    await server.wait_ready()
    return server


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[FitscoreServer]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    settings = Settings(
        listen="127.0.0.1:0",
        video_root=tmp_path / "videos",
        security=SecuritySettings(token_file=token_file),
    )
    server = await _serve(settings)
    yield server
    await server.stop(1)


async def test_calls_without_the_token_are_refused(guarded: FitscoreServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded.port}") as channel:
        stub = pb_grpc.AssessmentServiceStub(channel)
        for metadata in [(), (("authorization", "Bearer wrong"),)]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListAssessments(pb.ListAssessmentsRequest(), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.StreamEvents(pb.StreamEventsRequest(assessment_id="x")):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = await stub.ListAssessments(
            pb.ListAssessmentsRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),)
        )
        assert list(answer.assessments) == []
        # Health stays open for probes.
        health = health_pb2_grpc.HealthStub(channel)
        checked = await health.Check(health_pb2.HealthCheckRequest())
        assert checked.status == health_pb2.HealthCheckResponse.SERVING


def test_short_token_is_refused_at_start(tmp_path: Path) -> None:
    from server.security import read_token

    token_file = tmp_path / "token"
    token_file.write_text("short", encoding="utf-8")
    with pytest.raises(SettingsError, match="token_file"):
        read_token(SecuritySettings(token_file=token_file))


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*arguments: str) -> None:
    subprocess.run(["openssl", *arguments], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    names = {}
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=backend")):
        key, request, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            str(key),
            "-out",
            str(request),
        )
        extensions = folder / f"{name}.ext"
        extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            str(cert),
            "-extfile",
            str(extensions),
        )
        names[name] = (cert, key)
    return Certificates(ca, *names["server"], *names["client"])


async def test_mutual_tls(tmp_path: Path, certificates: Certificates) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        video_root=tmp_path / "videos",
        security=SecuritySettings(
            tls_cert_file=certificates.server_cert,
            tls_key_file=certificates.server_key,
            tls_client_ca_file=certificates.ca,
        ),
    )
    server = await _serve(settings)
    target = f"localhost:{server.port}"
    try:
        trusted = grpc.ssl_channel_credentials(
            root_certificates=certificates.ca.read_bytes(),
            private_key=certificates.client_key.read_bytes(),
            certificate_chain=certificates.client_cert.read_bytes(),
        )
        async with grpc.aio.secure_channel(target, trusted) as channel:
            stub = pb_grpc.AssessmentServiceStub(channel)
            answer = await stub.ListAssessments(pb.ListAssessmentsRequest(), timeout=10)
            assert list(answer.assessments) == []
        anonymous = grpc.ssl_channel_credentials(root_certificates=certificates.ca.read_bytes())
        async with grpc.aio.secure_channel(target, anonymous) as channel:
            stub = pb_grpc.AssessmentServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListAssessments(pb.ListAssessmentsRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.AssessmentServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ListAssessments(pb.ListAssessmentsRequest(), timeout=5)
    finally:
        await server.stop(1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_metrics_endpoint(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{_free_port()}"
    settings = Settings(listen="127.0.0.1:0", video_root=tmp_path / "videos", metrics_listen=listen)
    server = await _serve(settings)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
            return str(response.read().decode())

    try:
        text = await asyncio.to_thread(scrape)
    finally:
        await server.stop(1)
    for name in ("fitscore_active_assessments", "fitscore_inference_seconds_bucket"):
        assert name in text


async def test_not_serving_until_the_engine_is_warm(tmp_path: Path) -> None:
    import threading

    release = threading.Event()

    def slow_engine() -> FakeEngine:
        release.wait(10)
        return FakeEngine()

    server = await create_server(
        Settings(listen="127.0.0.1:0", video_root=tmp_path / "v"), engine_factory=slow_engine
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(health_pb2.HealthCheckRequest())
            assert checked.status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = pb_grpc.AssessmentServiceStub(channel)
            request = pb.StartAssessmentRequest(
                camera_id="lane1", source_url="rtsp://127.0.0.1:9/x", frame_count=10
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.StartAssessment(request)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            release.set()
            await asyncio.wait_for(server.wait_ready(), 10)
            checked = await health.Check(health_pb2.HealthCheckRequest())
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        release.set()
        await server.stop(1)


async def test_cli_talks_mutual_tls(
    tmp_path: Path, certificates: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    from client.cli import parse_command_line, run

    settings = Settings(
        listen="127.0.0.1:0",
        video_root=tmp_path / "videos",
        security=SecuritySettings(
            tls_cert_file=certificates.server_cert,
            tls_key_file=certificates.server_key,
            tls_client_ca_file=certificates.ca,
        ),
    )
    server = await _serve(settings)
    common = ["--server", f"localhost:{server.port}", "--tls-ca", str(certificates.ca)]
    try:
        with_certificate = [*common, "--tls-cert", str(certificates.client_cert)]
        with_certificate += ["--tls-key", str(certificates.client_key), "list"]
        assert await run(parse_command_line(with_certificate, {})) == 0
        assert await run(parse_command_line([*common, "list"], {})) == 2
        assert "UNAVAILABLE" in capsys.readouterr().err
    finally:
        await server.stop(1)
    with pytest.raises(SystemExit):
        parse_command_line([*common, "--tls-cert", str(certificates.client_cert), "list"], {})
