"""StartAssessment requests: every refusal names its field; output paths stay in the video root."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from client import assessment_pb2 as pb
from server.admission import admit, confine_output_path
from server.errors import AlreadyExists, InvalidArgument
from server.settings import SecuritySettings, Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        video_root=tmp_path / "videos", cameras={"lane9": "rtsp://127.0.0.1:8554/lane9"}
    )


def _request(**fields: object) -> pb.StartAssessmentRequest:
    values: dict[str, object] = {
        "camera_id": "lane1",
        "source_url": "rtsp://127.0.0.1:8554/cam1",
        "frame_count": 2440,
    }
    values.update(fields)
    return pb.StartAssessmentRequest(**values)  # type: ignore[arg-type]


def test_defaults_applied(settings: Settings) -> None:
    plan = admit(_request(), settings)
    assert plan.exercise == pb.EXERCISE_PUSH_UP
    assert plan.difficulty_level == 5
    assert plan.frame_count == 2440
    assert plan.duration_s == 0
    assert plan.video_path == (
        settings.video_root.resolve() / "lane1" / f"{plan.assessment_id}.mp4"
    )
    assert not plan.client_chose_id


def test_configured_camera_needs_no_url(settings: Settings) -> None:
    plan = admit(_request(camera_id="lane9", source_url=""), settings)
    assert plan.source_url == "rtsp://127.0.0.1:8554/lane9"


def test_duration_instead_of_frames(settings: Settings) -> None:
    plan = admit(_request(frame_count=0, duration=Duration(seconds=120)), settings)
    assert (plan.frame_count, plan.duration_s) == (0, 120.0)


def test_same_parameters_compares_everything_but_identity(settings: Settings) -> None:
    first = admit(_request(assessment_id="exam-1", output_path="a.mp4"), settings)
    again = admit(_request(assessment_id="exam-1", output_path="a.mp4"), settings)
    assert first.same_parameters(again)
    assert not first.same_parameters(replace(again, difficulty_level=3))


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"camera_id": ""}, "camera_id"),
        ({"camera_id": "lane 1"}, "camera_id"),
        ({"camera_id": "x" * 65}, "camera_id"),
        ({"assessment_id": "a/b"}, "assessment_id"),
        ({"source_url": ""}, "source_url"),
        ({"source_url": "http://127.0.0.1/x"}, "source_url"),
        ({"source_url": "file:///etc/passwd"}, "source_url"),
        ({"source_url": "rtsp:///nohost"}, "source_url"),
        ({"camera_id": "lane9", "source_url": "rtsp://elsewhere/x"}, "source_url"),
        ({"exercise": 99}, "exercise"),
        ({"difficulty_level": 6}, "difficulty_level"),
        ({"difficulty_level": -1}, "difficulty_level"),
        ({"frame_count": 0}, "frame_count"),
        ({"frame_count": -5}, "frame_count"),
        ({"frame_count": 10, "duration": Duration(seconds=5)}, "frame_count"),
        ({"frame_count": 0, "duration": Duration(seconds=-1)}, "duration"),
        ({"labels": {f"k{number}": "v" for number in range(17)}}, "labels"),
        ({"labels": {"bad key": "v"}}, "labels['bad key']"),
        ({"labels": {"k": "v" * 257}}, "labels['k']"),
        ({"output_path": "../escape.mp4"}, "output_path"),
        ({"output_path": "a/../../escape.mp4"}, "output_path"),
        ({"output_path": "/etc/evil.mp4"}, "output_path"),
        ({"output_path": "video.avi"}, "output_path"),
        ({"output_path": ".mp4"}, "output_path"),
        ({"output_path": "a\x00b.mp4"}, "output_path"),
    ],
)
def test_refusals_name_the_field(
    settings: Settings, fields: dict[str, object], field_name: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        admit(_request(**fields), settings)
    assert caught.value.field == field_name
    assert str(caught.value).startswith(field_name + ":")


def test_file_sources_only_when_allowed(settings: Settings, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0")
    allowed = replace(settings, security=SecuritySettings(allow_file_sources=True))
    assert admit(_request(source_url=clip.as_uri()), allowed).source_url == clip.as_uri()
    with pytest.raises(InvalidArgument, match="disabled"):
        admit(_request(source_url=clip.as_uri()), settings)


def test_symlink_escape_refused(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(InvalidArgument, match="symlink"):
        confine_output_path("link/x.mp4", root)


def test_absolute_path_inside_root_accepted(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    assert (
        confine_output_path(str(root / "lane1" / "a.mp4"), root)
        == root.resolve() / "lane1" / "a.mp4"
    )


@pytest.mark.parametrize("existing", ["a.mp4", "a.mp4.part"])
def test_existing_file_never_overwritten(tmp_path: Path, existing: str) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    (root / existing).write_bytes(b"evidence")
    with pytest.raises(AlreadyExists):
        confine_output_path("a.mp4", root)
    assert (root / existing).read_bytes() == b"evidence"
