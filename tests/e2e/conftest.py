"""End-to-end fixtures: the real server (real engine, real files) and a real RTSP camera."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.app import FitscoreServer, create_server
from server.settings import CameraSettings, Settings

SHARED_MEDIA = Path(__file__).resolve().parents[3] / "shared" / "media"
PUSHUP_CLIP = SHARED_MEDIA / "pushup_side_gg.mp4"
PUSHUP_FRAMES = 320
"""The clip has 325 frames at 23.976 frames/s; its fourth rep ends at about 12.6 s."""


@pytest.fixture
def pushup_clip() -> Path:
    if not PUSHUP_CLIP.is_file():
        pytest.skip(f"real footage not present at {PUSHUP_CLIP}")
    return PUSHUP_CLIP


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        video_root=tmp_path / "videos",
        camera=replace(CameraSettings(), max_gap_s=20.0, idle_close_s=5.0),
    )


ServerFactory = Callable[[Settings], "AsyncIterator[FitscoreServer]"]


@pytest.fixture
async def fitscore(settings: Settings) -> AsyncIterator[FitscoreServer]:
    server = await create_server(settings)
    await server.wait_ready()
    yield server
    await server.stop(5.0)


@pytest.fixture
async def stub(fitscore: FitscoreServer) -> AsyncIterator[pb_grpc.AssessmentServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fitscore.port}") as channel:
        yield pb_grpc.AssessmentServiceStub(channel)


async def collect(
    stub: pb_grpc.AssessmentServiceAsyncStub, assessment_id: str, after_sequence: int = 0
) -> list[pb.AssessmentEvent]:
    """Every event from ``after_sequence`` until Finished."""
    request = pb.StreamEventsRequest(assessment_id=assessment_id, after_sequence=after_sequence)
    return [event async for event in stub.StreamEvents(request)]


def payloads(events: list[pb.AssessmentEvent]) -> list[str]:
    return [str(event.WhichOneof("payload")) for event in events]
