"""`fitscore start|watch|stop|get|list`: drive assessments on a fitscore server.

It talks to the server only through the generated async stub and imports nothing from server/.
Exit codes: see `_EXIT_CODES_HELP` (shown by `fitscore --help`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from grpc import aio

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from client.formatting import EXERCISE_BY_NAME, STATE_BY_NAME, Printer

DEFAULT_SERVER_ADDRESS: Final = "127.0.0.1:50051"
TOKEN_ENVIRONMENT_VARIABLE: Final = "FITSCORE_TOKEN"

EXIT_OK: Final = 0
EXIT_CALL_FAILED: Final = 2
EXIT_UNKNOWN_END_REASON: Final = 7
EXIT_INTERRUPTED: Final = 130
EXIT_CODE_BY_END_REASON: Final[Mapping[int, int]] = {
    pb.END_REASON_COMPLETED: EXIT_OK,
    pb.END_REASON_VIOLATION: 3,
    pb.END_REASON_CANCELLED: 4,
    pb.END_REASON_FAILED: 5,
    pb.END_REASON_SHUTDOWN: 6,
}

_EXIT_CODES_HELP: Final = """\
exit codes:
  0    success; for start --follow and watch: the assessment finished COMPLETED
  2    a gRPC call failed ("fitscore: <CODE>: <message>" on stderr), or a usage error
  3    finished VIOLATION    4  finished CANCELLED    5  finished FAILED
  6    finished SHUTDOWN     7  finished with an end reason this client does not know
  130  interrupted

The token may also come from the environment variable FITSCORE_TOKEN."""


@dataclass(frozen=True)
class Connection:
    server_address: str
    token: str | None
    tls_root_certificates: bytes | None  # PEM; None = plaintext
    tls_client_certificate: bytes | None = None  # PEM chain and key, for mutual TLS
    tls_client_key: bytes | None = None


@dataclass(frozen=True)
class ReconnectPolicy:
    """How `watch` and `start --follow` retry a stream that ends with UNAVAILABLE."""

    max_attempts: int = 5  # consecutive reconnects without a new event before giving up
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def backoff_s(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (attempt - 1))


@dataclass(frozen=True)
class StartCommand:
    request: pb.StartAssessmentRequest
    follow: bool


# Besides start (which may follow), each command is the request it sends.
Command = (
    StartCommand
    | pb.StreamEventsRequest
    | pb.StopRequest
    | pb.GetAssessmentRequest
    | pb.ListAssessmentsRequest
)


@dataclass(frozen=True)
class Invocation:
    connection: Connection
    json_output: bool
    command: Command


class EventStreamEndedError(Exception):
    """The server closed the event stream cleanly before sending Finished."""


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; the only place that reads the process environment."""
    invocation = parse_command_line(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        return asyncio.run(run(invocation))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def parse_command_line(argv: Sequence[str], environment: Mapping[str, str]) -> Invocation:
    """Parse and check the arguments (argparse exits with code 2 and a usage line on a bad one)."""
    parser, subparsers = _build_parser()
    arguments = parser.parse_args(argv)
    pem: dict[str, bytes | None] = {}
    for flag in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(arguments, flag)
        try:
            pem[flag] = None if path is None else Path(path).read_bytes()
        except OSError as error:
            parser.error(
                f"argument --{flag.replace('_', '-')}: cannot read {path}: {error.strerror}"
            )
    if (pem["tls_cert"] is None) != (pem["tls_key"] is None) or (
        pem["tls_cert"] is not None and pem["tls_ca"] is None
    ):
        parser.error("arguments --tls-cert and --tls-key go together, with --tls-ca")
    connection = Connection(
        server_address=arguments.server,
        token=arguments.token or environment.get(TOKEN_ENVIRONMENT_VARIABLE) or None,
        tls_root_certificates=pem["tls_ca"],
        tls_client_certificate=pem["tls_cert"],
        tls_client_key=pem["tls_key"],
    )
    command = _command_from_arguments(arguments, subparsers[arguments.command])
    return Invocation(connection=connection, json_output=arguments.json_output, command=command)


async def run(invocation: Invocation, reconnect_policy: ReconnectPolicy | None = None) -> int:
    """Carry out one command; returns the process exit code."""
    token = invocation.connection.token
    try:
        async with _open_channel(invocation.connection) as channel:
            session = _Session(
                stub=pb_grpc.AssessmentServiceStub(channel),
                metadata=(("authorization", f"Bearer {token}"),) if token else (),
                printer=Printer(json_output=invocation.json_output),
                reconnect_policy=reconnect_policy or ReconnectPolicy(),
            )
            return await session.execute(invocation.command)
    except aio.AioRpcError as error:
        print(f"fitscore: {error.code().name}: {error.details() or ''}", file=sys.stderr)
        return EXIT_CALL_FAILED
    except EventStreamEndedError as error:
        print(f"fitscore: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED


def exit_code_for(assessment: pb.Assessment) -> int:
    return EXIT_CODE_BY_END_REASON.get(assessment.end_reason, EXIT_UNKNOWN_END_REASON)


def _open_channel(connection: Connection) -> aio.Channel:
    if connection.tls_root_certificates is None:
        return aio.insecure_channel(connection.server_address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=connection.tls_root_certificates,
        private_key=connection.tls_client_key,
        certificate_chain=connection.tls_client_certificate,
    )
    return aio.secure_channel(connection.server_address, credentials)


@dataclass(frozen=True)
class _Session:
    stub: pb_grpc.AssessmentServiceAsyncStub
    metadata: tuple[tuple[str, str], ...]
    printer: Printer
    reconnect_policy: ReconnectPolicy

    async def execute(self, command: Command) -> int:
        stub, metadata, printer = self.stub, self.metadata, self.printer
        if isinstance(command, StartCommand):
            started = (await stub.StartAssessment(command.request, metadata=metadata)).assessment
            printer.assessment(started)
            if not command.follow:
                return EXIT_OK
            final = await self.follow_events(started.assessment_id, 0, target=started)
            return exit_code_for(final)
        if isinstance(command, pb.StreamEventsRequest):
            target: pb.Assessment | None = None
            if not printer.json_output:  # readable Progress lines show the frame or time target
                request = pb.GetAssessmentRequest(assessment_id=command.assessment_id)
                target = (await stub.GetAssessment(request, metadata=metadata)).assessment
            final = await self.follow_events(
                command.assessment_id, command.after_sequence, target=target
            )
            return exit_code_for(final)
        if isinstance(command, pb.StopRequest):
            printer.assessment((await stub.Stop(command, metadata=metadata)).assessment)
        elif isinstance(command, pb.GetAssessmentRequest):
            printer.assessment((await stub.GetAssessment(command, metadata=metadata)).assessment)
        else:
            listed = await stub.ListAssessments(command, metadata=metadata)
            printer.assessment_rows(listed.assessments)
        return EXIT_OK

    async def follow_events(
        self, assessment_id: str, after_sequence: int, target: pb.Assessment | None
    ) -> pb.Assessment:
        """Print events after `after_sequence` until Finished, each exactly once; return the result.

        `target` (the assessment as fetched, when known) lets Progress lines show "600/2440".
        A stream that ends with UNAVAILABLE is reopened after the last printed sequence, up to
        `max_attempts` times in a row without a new event, waiting longer each time.
        """
        policy = self.reconnect_policy
        last_sequence = after_sequence
        failed_attempts = 0
        while True:
            request = pb.StreamEventsRequest(
                assessment_id=assessment_id, after_sequence=last_sequence
            )
            call = self.stub.StreamEvents(request, metadata=self.metadata)
            try:
                async for event in call:
                    if event.sequence <= last_sequence:
                        continue  # already printed: a resumed stream must not repeat anything
                    self.printer.event(event, target)
                    last_sequence = event.sequence
                    failed_attempts = 0
                    if event.HasField("finished"):
                        call.cancel()
                        return event.finished.assessment
            except aio.AioRpcError as error:
                retryable = error.code() == grpc.StatusCode.UNAVAILABLE
                if not retryable or failed_attempts >= policy.max_attempts:
                    raise
                failed_attempts += 1
                delay_s = policy.backoff_s(failed_attempts)
                print(
                    f"fitscore: stream lost (UNAVAILABLE: {error.details() or ''}); "
                    f"reconnecting after sequence {last_sequence} in {delay_s:.1f} s "
                    f"(attempt {failed_attempts} of {policy.max_attempts})",
                    file=sys.stderr,
                    flush=True,
                )
                await asyncio.sleep(delay_s)
                continue
            raise EventStreamEndedError(
                f"the event stream ended before the Finished event (last sequence {last_sequence})"
            )


def _command_from_arguments(
    arguments: argparse.Namespace, parser: argparse.ArgumentParser
) -> Command:
    if arguments.command == "start":
        return StartCommand(request=_start_request(arguments, parser), follow=arguments.follow)
    if arguments.command == "watch":
        return pb.StreamEventsRequest(assessment_id=arguments.id, after_sequence=arguments.after)
    if arguments.command == "stop":
        return pb.StopRequest(assessment_id=arguments.id, reason=arguments.reason)
    if arguments.command == "get":
        return pb.GetAssessmentRequest(assessment_id=arguments.id)
    request = pb.ListAssessmentsRequest(camera_id=arguments.camera)
    if arguments.state is not None:
        request.state = STATE_BY_NAME[arguments.state]
    return request


def _start_request(
    arguments: argparse.Namespace, parser: argparse.ArgumentParser
) -> pb.StartAssessmentRequest:
    labels: dict[str, str] = {}
    for key, value in arguments.labels:
        if key in labels:
            parser.error(f"argument --label: {key!r} given more than once")
        labels[key] = value
    request = pb.StartAssessmentRequest(
        camera_id=arguments.camera,
        source_url=arguments.source,
        difficulty_level=arguments.level,
        output_path=arguments.output,
        assessment_id=arguments.id,
        labels=labels,
    )
    if arguments.exercise is not None:
        request.exercise = EXERCISE_BY_NAME[arguments.exercise]
    if arguments.frames is not None:
        request.frame_count = arguments.frames
    else:
        request.duration.FromNanoseconds(round(arguments.duration * 1e9))
    if arguments.device_id is not None:
        request.device_id = arguments.device_id
    return request


def _label(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _whole_number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return seconds


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="fitscore",
        description="Start, follow, stop and inspect assessments on a fitscore server.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--server",
        default=DEFAULT_SERVER_ADDRESS,
        metavar="HOST:PORT",
        help=f"server address (default {DEFAULT_SERVER_ADDRESS})",
    )
    parser.add_argument("--token", help="bearer token (default: $FITSCORE_TOKEN)")
    parser.add_argument("--tls-ca", metavar="FILE", help="PEM root certificate(s); enables TLS")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM client key (mutual TLS)")
    json_help = "print each event or assessment as protobuf JSON, one per line"
    parser.add_argument("--json", dest="json_output", action="store_true", help=json_help)
    # --json is accepted after the command too; SUPPRESS keeps the top-level value when absent.
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--json", dest="json_output", action="store_true", default=argparse.SUPPRESS, help=json_help
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser("start", parents=[output], help="start an assessment")
    start.add_argument("--camera", required=True, help="camera id, e.g. lane-1")
    start.add_argument("--source", default="", metavar="URL", help="rtsp:// or rtsps:// URL")
    start.add_argument("--exercise", choices=list(EXERCISE_BY_NAME), help="default push-up")
    start.add_argument(
        "--level",
        type=int,
        choices=range(1, 6),
        default=0,
        metavar="1-5",
        help="difficulty; 5 = official standard (the server's default)",
    )
    length = start.add_mutually_exclusive_group(required=True)
    length.add_argument(
        "--frames",
        type=_whole_number(1),
        metavar="N",
        help="frames to judge, e.g. 2440 (2 min at 20 fps + 2 s)",
    )
    length.add_argument(
        "--duration",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stream time to judge instead of a frame count",
    )
    start.add_argument("--output", default="", metavar="PATH", help="video path (.mp4)")
    start.add_argument("--id", default="", metavar="ID", help="client-chosen assessment id")
    start.add_argument(
        "--label",
        dest="labels",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="echoed in every event (repeatable)",
    )
    start.add_argument("--device-id", type=int, metavar="N", help="deprecated GPU index (ignored)")
    start.add_argument("--follow", action="store_true", help="then print events until finished")

    watch = commands.add_parser("watch", parents=[output], help="print events until finished")
    watch.add_argument("id", metavar="ID")
    watch.add_argument(
        "--after",
        type=_whole_number(0),
        default=0,
        metavar="N",
        help="only events with a sequence greater than N (default 0)",
    )

    stop = commands.add_parser("stop", parents=[output], help="cancel an assessment")
    stop.add_argument("id", metavar="ID")
    stop.add_argument("--reason", default="", metavar="TEXT", help="kept in end_detail")

    get = commands.add_parser("get", parents=[output], help="show one assessment")
    get.add_argument("id", metavar="ID")

    listing = commands.add_parser("list", parents=[output], help="list assessments")
    listing.add_argument("--camera", default="", help="only this camera's assessments")
    listing.add_argument("--state", choices=list(STATE_BY_NAME), help="only this state")

    subparsers = {"start": start, "watch": watch, "stop": stop, "get": get, "list": listing}
    return parser, subparsers


if __name__ == "__main__":
    sys.exit(main())
