"""The `fitscore` CLI against a fake AssessmentService on a real grpc.aio server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from client import assessment_pb2 as pb
from client import cli
from tests.client.fake_service import (
    ASSESSMENT_ID,
    DROP_DETAILS,
    VIDEO_PATH,
    FakeAssessmentService,
    FakeServer,
    ScriptedError,
    scripted_assessment,
    scripted_events,
    serve_fake,
)

FAST_RECONNECT = cli.ReconnectPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)

READABLE_EVENT_LINES = [
    "00:00.0  started  camera lane-1  1280x720  25.0 fps",
    "00:12.4  rep 1 counted  (elbow 82°→171°)",
    "00:15.0  foul NOT_LOW_ENOUGH: elbow reached 112°, needs ≤ 90°",
    "00:20.1  warning CAMERA_RECONNECTING: no frame for 2.0 s",
    "00:30.0  progress  1 rep  600/2440 frames  2 skipped  phase DOWN",
    "00:42.0  rep 2 counted",
    f"finished COMPLETED  reps 2  fouls {{NOT_LOW_ENOUGH: 1}}  video {VIDEO_PATH}",
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    service = FakeAssessmentService()
    service.add(scripted_assessment(), scripted_events())
    async with serve_fake(service) as server:
        yield server


async def run_cli(
    server: FakeServer, *arguments: str, environment: Mapping[str, str] | None = None
) -> int:
    argv = ["--server", server.address, *arguments]
    invocation = cli.parse_command_line(argv, environment or {})
    return await cli.run(invocation, reconnect_policy=FAST_RECONNECT)


def parse_events(stdout: str) -> list[pb.AssessmentEvent]:
    return [json_format.Parse(line, pb.AssessmentEvent()) for line in stdout.splitlines()]


def usage_error(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    """Run main() with arguments that argparse must reject; return its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--server", "127.0.0.1:1", *arguments])
    assert exit_info.value.code == cli.EXIT_CALL_FAILED
    return capsys.readouterr().err


# --- start -----------------------------------------------------------------------------------


async def test_start_maps_every_flag_onto_the_request(fake: FakeServer) -> None:
    exit_code = await run_cli(
        fake, "start", "--camera", "lane-1", "--source", "rtsp://10.0.0.7/stream1",
        "--exercise", "sit-up", "--level", "3", "--duration", "90.5",
        "--output", "lane-1/e42.mp4", "--id", "a-0001", "--device-id", "1",
        "--label", "examinee_id=E-42", "--label", "note=a=b", "--label", "empty=",
    )  # fmt: skip

    expected = pb.StartAssessmentRequest(
        camera_id="lane-1",
        source_url="rtsp://10.0.0.7/stream1",
        exercise=pb.EXERCISE_SIT_UP,
        difficulty_level=3,
        output_path="lane-1/e42.mp4",
        assessment_id="a-0001",
        device_id=1,
        labels={"examinee_id": "E-42", "note": "a=b", "empty": ""},
    )
    expected.duration.FromNanoseconds(90_500_000_000)
    assert exit_code == cli.EXIT_OK
    assert fake.service.start_requests == [expected]


async def test_start_with_frames_leaves_duration_and_defaults_unset(fake: FakeServer) -> None:
    assert await run_cli(fake, "start", "--camera", "lane-1", "--frames", "2440") == cli.EXIT_OK

    (request,) = fake.service.start_requests
    assert request == pb.StartAssessmentRequest(camera_id="lane-1", frame_count=2440)
    assert not request.HasField("duration")


@pytest.mark.parametrize(
    ("name", "exercise"),
    [
        ("push-up", pb.EXERCISE_PUSH_UP),
        ("sit-up", pb.EXERCISE_SIT_UP),
        ("pull-up", pb.EXERCISE_PULL_UP),
    ],
)
async def test_start_exercise_names(
    fake: FakeServer, name: str, exercise: pb.Exercise.ValueType
) -> None:
    await run_cli(fake, "start", "--camera", "c", "--frames", "1", "--exercise", name)

    assert fake.service.start_requests[0].exercise == exercise


async def test_start_prints_the_assessment(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_cli(fake, "start", "--camera", "lane-1", "--frames", "2440")

    lines = capsys.readouterr().out.splitlines()
    assert "assessment  a-0001" in lines
    assert "length      2440 frames" in lines
    assert "labels      class=3/1  examinee_id=E-42" in lines


async def test_start_json_prints_the_assessment_on_one_line(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_cli(fake, "--json", "start", "--camera", "lane-1", "--frames", "2440")

    (line,) = capsys.readouterr().out.splitlines()
    assert json_format.Parse(line, pb.Assessment()) == scripted_assessment()
    assert '"assessment_id": "a-0001"' in line  # proto field names, not camelCase


async def test_start_follow_prints_events_until_finished(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = await run_cli(fake, "start", "--camera", "lane-1", "--frames", "2440", "--follow")

    lines = capsys.readouterr().out.splitlines()
    assert exit_code == cli.EXIT_OK
    assert lines[0] == "assessment  a-0001"
    assert lines[-len(READABLE_EVENT_LINES) :] == READABLE_EVENT_LINES
    assert fake.service.stream_requests == [
        pb.StreamEventsRequest(assessment_id=ASSESSMENT_ID, after_sequence=0)
    ]


async def test_start_error_is_reported_with_its_code(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    details = "difficulty_level: must be 1..5, got 9"
    fake.service.start_error = ScriptedError(grpc.StatusCode.INVALID_ARGUMENT, details)

    exit_code = await run_cli(fake, "start", "--camera", "lane-1", "--frames", "2440", "--follow")

    captured = capsys.readouterr()
    assert exit_code == cli.EXIT_CALL_FAILED
    assert captured.err == f"fitscore: INVALID_ARGUMENT: {details}\n"
    assert captured.out == ""
    assert fake.service.stream_requests == []


# --- watch -----------------------------------------------------------------------------------


async def test_watch_json_lines_parse_back_into_the_same_events(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = await run_cli(fake, "--json", "watch", ASSESSMENT_ID)

    stdout = capsys.readouterr().out
    assert exit_code == cli.EXIT_OK
    assert parse_events(stdout) == scripted_events()
    assert '"media_offset": "12.400s"' in stdout


async def test_watch_accepts_json_after_the_command(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_cli(fake, "watch", ASSESSMENT_ID, "--json")

    assert parse_events(capsys.readouterr().out) == scripted_events()


async def test_watch_prints_one_readable_line_per_event(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = await run_cli(fake, "watch", ASSESSMENT_ID)

    assert exit_code == cli.EXIT_OK
    assert capsys.readouterr().out.splitlines() == READABLE_EVENT_LINES


async def test_watch_after_replays_only_later_events(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_cli(fake, "--json", "watch", ASSESSMENT_ID, "--after", "4")

    assert parse_events(capsys.readouterr().out) == scripted_events()[4:]
    assert fake.service.stream_requests[0].after_sequence == 4


@pytest.mark.parametrize(
    ("end_reason", "expected_exit_code"),
    [
        (pb.END_REASON_COMPLETED, 0),
        (pb.END_REASON_VIOLATION, 3),
        (pb.END_REASON_CANCELLED, 4),
        (pb.END_REASON_FAILED, 5),
        (pb.END_REASON_SHUTDOWN, 6),
        (pb.END_REASON_UNSPECIFIED, 7),
    ],
)
async def test_watch_exit_code_follows_the_end_reason(
    fake: FakeServer, end_reason: pb.EndReason.ValueType, expected_exit_code: int
) -> None:
    fake.service.add(scripted_assessment(), scripted_events(end_reason))

    assert await run_cli(fake, "--json", "watch", ASSESSMENT_ID) == expected_exit_code


async def test_watch_shows_the_violation_that_ended_it(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.service.add(scripted_assessment(), scripted_events(pb.END_REASON_VIOLATION))

    await run_cli(fake, "watch", ASSESSMENT_ID)

    assert capsys.readouterr().out.splitlines()[-1] == (
        "finished VIOLATION RESTING  reps 2  fouls {NOT_LOW_ENOUGH: 1}"
        f"  video {VIDEO_PATH}  (rested at the bottom for 5.2 s)"
    )


async def test_watch_resumes_after_a_dropped_stream_without_loss_or_repeats(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.service.stream_drops = [3]

    exit_code = await run_cli(fake, "--json", "watch", ASSESSMENT_ID)

    captured = capsys.readouterr()
    assert exit_code == cli.EXIT_OK
    assert parse_events(captured.out) == scripted_events()
    assert [request.after_sequence for request in fake.service.stream_requests] == [0, 3]
    assert "reconnecting after sequence 3" in captured.err


async def test_watch_survives_repeated_drops_and_counts_attempts_per_gap(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Three drops in total, at most two in a row without progress: within max_attempts = 3.
    fake.service.stream_drops = [2, 0, 1, 0]

    exit_code = await run_cli(fake, "watch", ASSESSMENT_ID, "--after", "2")

    assert exit_code == cli.EXIT_OK
    assert capsys.readouterr().out.splitlines() == READABLE_EVENT_LINES[2:]
    afters = [request.after_sequence for request in fake.service.stream_requests]
    assert afters == [2, 4, 4, 5, 5]


async def test_watch_never_prints_an_event_twice_even_when_the_server_replays_it(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.service.replays_everything = True
    fake.service.stream_drops = [4]

    await run_cli(fake, "--json", "watch", ASSESSMENT_ID)

    assert parse_events(capsys.readouterr().out) == scripted_events()


async def test_watch_gives_up_after_the_retry_limit(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.service.stream_drops = [0] * 10

    exit_code = await run_cli(fake, "--json", "watch", ASSESSMENT_ID)

    captured = capsys.readouterr()
    assert exit_code == cli.EXIT_CALL_FAILED
    assert len(fake.service.stream_requests) == 1 + FAST_RECONNECT.max_attempts
    assert captured.err.splitlines()[-1] == f"fitscore: UNAVAILABLE: {DROP_DETAILS}"
    assert captured.out == ""


async def test_watch_unknown_id_is_not_found_and_not_retried(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = await run_cli(fake, "--json", "watch", "nope")

    assert exit_code == cli.EXIT_CALL_FAILED
    assert capsys.readouterr().err == "fitscore: NOT_FOUND: no assessment has id 'nope'\n"
    assert len(fake.service.stream_requests) == 1


async def test_watch_reports_a_stream_that_ends_before_finished(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.service.add(scripted_assessment(), scripted_events()[:3])

    exit_code = await run_cli(fake, "--json", "watch", ASSESSMENT_ID)

    assert exit_code == cli.EXIT_CALL_FAILED
    assert capsys.readouterr().err == (
        "fitscore: the event stream ended before the Finished event (last sequence 3)\n"
    )


# --- stop, get, list -------------------------------------------------------------------------


async def test_stop_sends_the_reason_and_prints_the_result(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = await run_cli(fake, "stop", ASSESSMENT_ID, "--reason", "examiner cancelled")

    assert exit_code == cli.EXIT_OK
    assert fake.service.stop_requests == [
        pb.StopRequest(assessment_id=ASSESSMENT_ID, reason="examiner cancelled")
    ]
    assert "assessment  a-0001" in capsys.readouterr().out.splitlines()


async def test_get_unknown_id_prints_not_found(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = await run_cli(fake, "get", "nope")

    captured = capsys.readouterr()
    assert exit_code == cli.EXIT_CALL_FAILED
    assert captured.err == "fitscore: NOT_FOUND: no assessment has id 'nope'\n"
    assert captured.out == ""


async def test_list_sends_the_filters_and_prints_one_line_each(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = await run_cli(fake, "list", "--camera", "lane-1", "--state", "finished")

    assert exit_code == cli.EXIT_OK
    assert fake.service.list_requests == [
        pb.ListAssessmentsRequest(camera_id="lane-1", state=pb.ASSESSMENT_STATE_FINISHED)
    ]
    assert capsys.readouterr().out.splitlines() == [
        "a-0001  lane-1  push-up  RUNNING  0 reps  2023-11-14T22:13:20Z"
    ]


async def test_list_json_prints_assessments_that_parse_back(
    fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_cli(fake, "--json", "list")

    lines = capsys.readouterr().out.splitlines()
    assert [json_format.Parse(line, pb.Assessment()) for line in lines] == [scripted_assessment()]
    assert fake.service.list_requests == [pb.ListAssessmentsRequest()]


# --- token and TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "environment", "expected_authorization"),
    [
        ([], {}, None),
        (["--token", "s3cret"], {}, "Bearer s3cret"),
        ([], {"FITSCORE_TOKEN": "from-env"}, "Bearer from-env"),
        (["--token", "s3cret"], {"FITSCORE_TOKEN": "from-env"}, "Bearer s3cret"),
    ],
)
async def test_token_is_sent_as_bearer_metadata(
    fake: FakeServer,
    arguments: list[str],
    environment: dict[str, str],
    expected_authorization: str | None,
) -> None:
    await run_cli(fake, *arguments, "get", ASSESSMENT_ID, environment=environment)

    assert fake.service.authorizations == [expected_authorization]


def test_parsing_reads_only_the_environment_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.TOKEN_ENVIRONMENT_VARIABLE, "leaked")

    invocation = cli.parse_command_line(["get", ASSESSMENT_ID], {})

    assert invocation.connection.token is None


def test_main_takes_the_token_from_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: list[cli.Invocation] = []

    async def record(invocation: cli.Invocation) -> int:
        received.append(invocation)
        return 17

    monkeypatch.setenv(cli.TOKEN_ENVIRONMENT_VARIABLE, "from-env")
    monkeypatch.setattr(cli, "run", record)

    assert cli.main(["get", ASSESSMENT_ID]) == 17
    assert received[0].connection.token == "from-env"


def test_main_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = cli.main(["--server", "127.0.0.1:1", "get", ASSESSMENT_ID])

    assert exit_code == cli.EXIT_CALL_FAILED
    assert capsys.readouterr().err.startswith("fitscore: UNAVAILABLE: ")


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    certificate_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key_path), "-out", str(certificate_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return certificate_path, key_path


async def test_tls_ca_verifies_the_server(
    tls_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    certificate_path, key_path = tls_files
    credentials = grpc.ssl_server_credentials(
        [(key_path.read_bytes(), certificate_path.read_bytes())]
    )
    service = FakeAssessmentService()
    service.add(scripted_assessment())
    async with serve_fake(service, credentials) as server:
        with_tls = await run_cli(server, "--tls-ca", str(certificate_path), "get", ASSESSMENT_ID)
        plaintext = await run_cli(server, "get", ASSESSMENT_ID)

    assert with_tls == cli.EXIT_OK
    assert "assessment  a-0001" in capsys.readouterr().out.splitlines()
    assert plaintext == cli.EXIT_CALL_FAILED


# --- usage errors ----------------------------------------------------------------------------


def test_label_without_equals_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    stderr = usage_error(capsys, "start", "--camera", "c", "--frames", "10", "--label", "examinee")

    assert "argument --label: expected KEY=VALUE, got 'examinee'" in stderr
    assert stderr.startswith("usage: fitscore start")


def test_label_with_empty_key_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    stderr = usage_error(capsys, "start", "--camera", "c", "--frames", "10", "--label", "=x")

    assert "argument --label: expected KEY=VALUE, got '=x'" in stderr


def test_label_given_twice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    stderr = usage_error(
        capsys, "start", "--camera", "c", "--frames", "10", "--label", "k=1", "--label", "k=2"
    )

    assert "argument --label: 'k' given more than once" in stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--frames", "10", "--duration", "5"], "not allowed with argument"),
        ([], "one of the arguments --frames --duration is required"),
        (["--frames", "0"], "argument --frames: must be at least 1, got 0"),
        (["--frames", "2.5"], "argument --frames: expected a whole number, got '2.5'"),
        (["--duration", "nan"], "argument --duration: must be a finite number of seconds > 0"),
        (["--duration", "-3"], "argument --duration: must be a finite number of seconds > 0"),
        (["--frames", "10", "--exercise", "squat"], "argument --exercise: invalid choice"),
        (["--frames", "10", "--level", "6"], "argument --level: invalid choice: 6"),
    ],
)
def test_start_usage_errors(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert message in usage_error(capsys, "start", "--camera", "c", *arguments)


def test_watch_negative_after_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "argument --after: must be at least 0, got -1" in usage_error(
        capsys, "watch", ASSESSMENT_ID, "--after", "-1"
    )


def test_unreadable_tls_ca_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"

    stderr = usage_error(capsys, "--tls-ca", str(missing), "get", ASSESSMENT_ID)

    assert f"argument --tls-ca: cannot read {missing}: No such file or directory" in stderr
