"""`fitscore-server`: serve, and the operator's tools around it.

fitscore-server serve [--config FILE] [--listen HOST:PORT] [--video-root DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.models import DEFAULT_MODEL_DIR, fetch_command
from server import evaluation
from server.app import create_server
from server.bench import add_bench_arguments, bench_command
from server.settings import Settings, SettingsError, load_settings

logger = logging.getLogger("server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fitscore-server", description="gRPC server for camera-judged fitness assessments"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server until SIGTERM/SIGINT")
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:50051)")
    serve.add_argument("--video-root", type=Path, help="directory for evidence videos")
    serve.add_argument("--rules", type=Path, dest="rules_file", help="judging rules override")
    serve.add_argument("--metrics-listen", help="HOST:PORT for the Prometheus endpoint")
    serve.set_defaults(handler=_serve_command)

    models = commands.add_parser("models", help="provision the pose models")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    fetch = model_commands.add_parser(
        "fetch", help="download MediaPipe's BlazePose files and convert them to ONNX (idempotent)"
    )
    fetch.add_argument(
        "--dir", type=Path, default=DEFAULT_MODEL_DIR, help=f"default {DEFAULT_MODEL_DIR}"
    )
    fetch.set_defaults(handler=lambda arguments: fetch_command(arguments.dir))

    score = commands.add_parser(
        "score", help="judge a recorded video (or saved keypoints) the way a live assessment is"
    )
    evaluation.add_score_arguments(score)
    score.set_defaults(handler=evaluation.score_command)

    evaluate = commands.add_parser(
        "evaluate", help="judge hand-counted clips from a manifest and print the accuracy"
    )
    evaluation.add_evaluate_arguments(evaluate)
    evaluate.set_defaults(handler=evaluation.evaluate_command)

    bench = commands.add_parser(
        "bench",
        help="measure: cameras per box (default), endurance (--soak) or the pose engine (engine)",
    )
    bench.add_argument(
        "mode",
        nargs="?",
        choices=["engine"],
        help="`engine`: images/s of the landmark model and frames/s of the pipeline",
    )
    add_bench_arguments(bench)
    bench.add_argument("--runtime", default="onnxruntime", help="engine mode: the runtime")
    bench.add_argument("--threads", type=int, help="engine mode: ONNX Runtime threads per call")
    bench.add_argument("--max-frames", type=int, help="engine mode: frames of --source to use")
    bench.set_defaults(handler=_bench_command)
    return parser


def _bench_command(arguments: argparse.Namespace) -> int:
    if arguments.mode != "engine":
        return bench_command(arguments)
    from engines.benchmark import bench_engine, format_report

    result = bench_engine(
        arguments.model_dir,
        arguments.source,
        runtime=arguments.runtime,
        threads=arguments.threads,
        max_frames=arguments.max_frames,
    )
    print(json.dumps(result, indent=1) if arguments.json else format_report(result))
    return 0


def _serve_command(arguments: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            arguments.config,
            listen=arguments.listen,
            video_root=arguments.video_root,
            rules_file=arguments.rules_file,
            metrics_listen=arguments.metrics_listen,
        )
    except SettingsError as error:
        print(f"fitscore-server: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(settings))


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then shut down within ``settings.grace_s``."""
    try:
        running = await create_server(settings)
    except OSError as error:
        logger.error("cannot start: %s", error)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stopping.set)
    print(f"fitscore-server: serving on port {running.port}", flush=True)
    # Health says NOT_SERVING until the pose engine is warm; a second line says when it is.
    waiting = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([waiting, running.warm_up], return_when=asyncio.FIRST_COMPLETED)
    if running.warm_up.done() and running.warm_up.exception() is not None:
        logger.error("cannot start judging: %s", running.warm_up.exception())
        waiting.cancel()
        await running.stop(0)
        return 1
    if running.warm_up.done():
        print("fitscore-server: ready", flush=True)
    await waiting
    logger.info("shutting down (grace %.1f s)", settings.grace_s)
    await running.stop(settings.grace_s)
    logger.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    return int(arguments.handler(arguments))


if __name__ == "__main__":
    sys.exit(main())
