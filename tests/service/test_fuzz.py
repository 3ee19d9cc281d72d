"""Fuzzed StartAssessment requests: only documented status codes, no file outside the video root."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.app import FitscoreServer, create_server
from server.settings import Settings
from tests.service.fakes import FakeEngine

DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
}


class BackgroundServer:
    """The real aio server on its own event loop thread, for a synchronous client."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server: FitscoreServer = asyncio.run_coroutine_threadsafe(
            self._start(settings), self._loop
        ).result(30)

    async def _start(self, settings: Settings) -> FitscoreServer:
        server = await create_server(settings, engine_factory=FakeEngine)
        await server.wait_ready()
        return server

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, int]]:
    root = tmp_path_factory.mktemp("fuzz")
    video_root, outside = root / "videos", root / "outside"
    video_root.mkdir()
    outside.mkdir()
    (video_root / "escape").symlink_to(outside)
    background = BackgroundServer(Settings(listen="127.0.0.1:0", video_root=video_root))
    yield video_root, outside, background.server.port
    background.close()


paths = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["../x.mp4", "/etc/x.mp4", "escape/x.mp4", "a/../../x.mp4", "ok.mp4", "a//b.mp4", "."]
    ),
)
urls = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["rtsp://127.0.0.1:9/cam", "rtsps://127.0.0.1:9/x", "file:///etc/passwd", "http://x/"]
    ),
)
requests = st.builds(
    pb.StartAssessmentRequest,
    camera_id=st.one_of(st.text(max_size=70), st.sampled_from(["lane1", "lane-2", "a.b_c"])),
    source_url=urls,
    exercise=st.integers(-3, 6),
    difficulty_level=st.integers(-2, 8),
    frame_count=st.integers(-10, 10**9),
    duration=st.one_of(st.none(), st.builds(Duration, seconds=st.integers(-5, 10**6))),
    output_path=paths,
    assessment_id=st.one_of(st.just(""), st.text(max_size=70)),
    labels=st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=20),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_fuzzed_starts_get_documented_codes(
    world: tuple[Path, Path, int], request: pb.StartAssessmentRequest
) -> None:
    video_root, outside, port = world
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AssessmentServiceStub(channel)
        # Every fuzzed camera is unreachable, so no start can succeed.
        with pytest.raises(grpc.RpcError) as caught:
            stub.StartAssessment(request, timeout=30)
    error = caught.value
    assert error.code() in DOCUMENTED, (error.code(), error.details())
    assert list(outside.iterdir()) == []
    for path in video_root.rglob("*"):
        assert path.resolve().is_relative_to(video_root.resolve()) or path.is_symlink()
