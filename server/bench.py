"""`fitscore-server bench`: how many cameras one server judges in real time, through the real path.

Each run starts the real server in this process (engine, cameras, recorders), starts one timed
assessment on each of N cameras over gRPC, follows every event stream to ``Finished`` and reports
frames received, judged and skipped, frame→event latency (camera hand-over → judgement on the
event loop; decoding comes before the hand-over), CPU (100 % = one core, this process), RSS, and
CPU per thread group. Cameras read the source as ``file://`` (paced at its frame rate) or, with
``--rtsp``, from the GStreamer RTSP test server. A source not at ``--fps`` (or shorter than a run)
is transcoded once (libx264, same size, GOP = fps, no B-frames) into the cache directory;
:mod:`server.bench_probes` prepares the source and reads the process's figures.

A run holds real time when every assessment completed, ≥ 97 % of ``seconds × fps × N`` frames
arrived, ≤ 1 % were skipped, and every camera's stream time kept pace with wall time (≥ 0.97: a
paced file that decodes too slowly falls behind instead of losing frames). ``--sweep`` finds the
largest such N; ``--soak`` (:mod:`server.soak`) runs for minutes with camera faults instead.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import importlib.util
import json
import multiprocessing
import os
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.app import FitscoreServer, create_server
from server.bench_probes import Snapshot, load_average, prepare_source, sample_rss
from server.settings import (
    CameraSettings,
    EngineSettings,
    LimitSettings,
    SecuritySettings,
    Settings,
)

DEFAULT_FPS = 20
DEFAULT_SECONDS = 20.0
DEFAULT_CACHE_DIR = Path("var/bench")
MIN_RECEIVED_FRACTION = 0.97
MAX_SKIPPED_PCT = 1.0
MIN_PACE = 0.97
SOURCE_MARGIN_S = 5.0
"""A transcoded source lasts the run plus this (the camera opens before the clock starts)."""
FOLLOW_TIMEOUT_MARGIN_S = 60.0


# --- one run -------------------------------------------------------------------------------------


def bench_settings(
    video_root: Path, model_dir: Path, cameras: int, *, max_gap_s: float, workers: int = 0
) -> Settings:
    """The real server's settings for a benchmark or soak on 127.0.0.1 (any free port)."""
    return Settings(
        listen="127.0.0.1:0",
        video_root=video_root,
        log_level="WARNING",
        engine=EngineSettings(model_dir=model_dir, workers=workers),
        camera=CameraSettings(loop_files=True, max_gap_s=max_gap_s),
        limits=LimitSettings(max_assessments=max(cameras, LimitSettings().max_assessments)),
        security=SecuritySettings(allow_file_sources=True),
    )


async def follow_events(
    stub: pb_grpc.AssessmentServiceAsyncStub, assessment_id: str
) -> list[pb.AssessmentEvent]:
    """Every event of an assessment until Finished, resuming after a dropped stream."""
    events: list[pb.AssessmentEvent] = []
    while not events or events[-1].WhichOneof("payload") != "finished":
        after = events[-1].sequence if events else 0
        request = pb.StreamEventsRequest(assessment_id=assessment_id, after_sequence=after)
        try:
            async for event in stub.StreamEvents(request):
                events.append(event)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.5)
    return events


def stream_pace(events: list[pb.AssessmentEvent]) -> float | None:
    """Stream seconds per wall second from Started to the last Progress (None: too short)."""
    started = next((event for event in events if event.HasField("started")), None)
    progress = [event for event in events if event.HasField("progress")]
    if started is None or not progress:
        return None
    wall_ns = progress[-1].time.ToNanoseconds() - started.time.ToNanoseconds()
    return progress[-1].progress.elapsed.ToNanoseconds() / wall_ns if wall_ns > 0 else None


def count_end_reasons(finals: list[pb.Assessment]) -> dict[str, int]:
    names = [pb.EndReason.Name(final.end_reason).removeprefix("END_REASON_") for final in finals]
    return {name: names.count(name) for name in sorted(set(names))}


@dataclass(frozen=True)
class BenchRun:
    """What one run of N cameras measured. CPU percentages: 100 = one core."""

    cameras: int
    fps: int
    seconds: float
    transport: str
    source: str
    realtime: bool
    failed_checks: list[str]
    frames_expected: int
    frames_received: int
    frames_judged: int
    frames_skipped: int
    received_pct: float
    skipped_pct: float
    pace_min: float | None
    """The slowest camera's stream seconds per wall second (1.0 = real time)."""
    end_reasons: dict[str, int]
    latency_samples: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    wall_s: float
    cpu_pct: float
    cpu_by_thread_pct: dict[str, float]
    rtsp_server_cpu_pct: float | None
    box_cpu_pct: float
    """Every process on the machine (other users' included), % of one core; max 100 × cores."""
    rss_mib_start: float
    rss_mib_max: float
    rss_mib_end: float
    inference_workers: int
    inference_batches: int
    mean_batch_size: float | None
    mean_inference_ms: float | None
    inference_busy_pct: float
    """Time inside engine.infer per wall time, all workers together (100 = one worker busy)."""
    load_average_start: list[float]
    load_average_end: list[float]
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, floats rounded to what the measurement can tell."""
        return {key: _rounded(value) for key, value in asdict(self).items()}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


async def measure_run(
    running: FitscoreServer,
    url_for: Callable[[int], str],
    *,
    cameras: int,
    fps: int,
    seconds: float,
    transport: str,
    source: Path,
    rtsp_pid: int | None = None,
) -> BenchRun:
    """Start one ``seconds``-long assessment on each of ``cameras`` cameras and measure."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.AssessmentServiceStub(channel)
        request = pb.StartAssessmentRequest()
        request.duration.FromNanoseconds(int(seconds * 1e9))

        async def one(index: int) -> list[pb.AssessmentEvent]:
            mine = pb.StartAssessmentRequest(camera_id=f"cam{index}", source_url=url_for(index))
            mine.MergeFrom(request)
            mine.output_path = f"cam{index}.mp4"
            started = await stub.StartAssessment(mine)
            return await follow_events(stub, started.assessment.assessment_id)

        load_start = load_average()
        running.metrics.recent_frame_latencies_s.clear()
        before = Snapshot.take(running, rtsp_pid)
        rss_samples: list[float] = []
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(rss_samples, stop_sampling))
        followed = await asyncio.wait_for(
            asyncio.gather(*(one(index) for index in range(cameras))),
            seconds + FOLLOW_TIMEOUT_MARGIN_S + cameras,
        )
        after = Snapshot.take(running, rtsp_pid)
        stop_sampling.set()
        await sampler
    finals = [events[-1].finished.assessment for events in followed]
    paces = [pace for pace in map(stream_pace, followed) if pace is not None]
    latencies_ms = 1000 * np.array(running.metrics.recent_frame_latencies_s, dtype=np.float64)
    wall_s = after.wall_s - before.wall_s
    batches = int(after.batches - before.batches)
    inference_s = after.inference_s - before.inference_s
    end_reasons = count_end_reasons(finals)
    expected = round(seconds * fps) * cameras
    received = sum(final.frames_received for final in finals)
    skipped = sum(final.frames_skipped for final in finals)
    skipped_pct = 100.0 * skipped / received if received else 100.0
    pace_min = min(paces) if len(paces) == cameras else None
    checks = {
        "not every assessment completed": end_reasons == {"COMPLETED": cameras},
        f"received < {MIN_RECEIVED_FRACTION:.0%}": received >= MIN_RECEIVED_FRACTION * expected,
        f"skipped > {MAX_SKIPPED_PCT:g} %": skipped_pct <= MAX_SKIPPED_PCT,
        f"stream pace < {MIN_PACE:g}": pace_min is not None and pace_min >= MIN_PACE,
    }
    failed = [check for check, passed in checks.items() if not passed]
    percentiles = np.percentile(latencies_ms, [50, 99]) if latencies_ms.size else [None, None]
    rtsp_s = None
    if after.rtsp_cpu_s is not None and before.rtsp_cpu_s is not None:
        rtsp_s = after.rtsp_cpu_s - before.rtsp_cpu_s
    return BenchRun(
        cameras=cameras,
        fps=fps,
        seconds=seconds,
        transport=transport,
        source=str(source),
        realtime=not failed,
        failed_checks=failed,
        frames_expected=expected,
        frames_received=received,
        frames_judged=sum(final.frames_judged for final in finals),
        frames_skipped=skipped,
        received_pct=100.0 * received / expected,
        skipped_pct=skipped_pct,
        pace_min=pace_min,
        end_reasons=end_reasons,
        latency_samples=int(latencies_ms.size),
        latency_p50_ms=None if percentiles[0] is None else float(percentiles[0]),
        latency_p99_ms=None if percentiles[1] is None else float(percentiles[1]),
        wall_s=wall_s,
        cpu_pct=100.0 * (after.cpu_s - before.cpu_s) / wall_s,
        cpu_by_thread_pct=after.cpu_by_thread_pct(before),
        rtsp_server_cpu_pct=None if rtsp_s is None else 100.0 * rtsp_s / wall_s,
        box_cpu_pct=after.box_cpu_pct(before),
        rss_mib_start=before.rss_mib,
        rss_mib_max=max(rss_samples),
        rss_mib_end=rss_samples[-1],
        inference_workers=sum(
            thread.name.startswith("fitscore-batcher") for thread in threading.enumerate()
        ),
        inference_batches=batches,
        mean_batch_size=(after.batched_frames - before.batched_frames) / batches
        if batches
        else None,
        mean_inference_ms=1000 * inference_s / batches if batches else None,
        inference_busy_pct=100.0 * inference_s / wall_s,
        load_average_start=load_start,
        load_average_end=load_average(),
    )


def start_rtsp_server(mounts: dict[str, Path]) -> Any:
    """A started GStreamer RTSP test server looping ``mounts`` (stop it).

    Its controller lives with the tests (tests/support/rtsp.py), beside this package in a source
    checkout; it needs the dev extras and Debian's python3-gi.
    """
    module_path = Path(__file__).resolve().parents[1] / "tests" / "support" / "rtsp.py"
    spec = importlib.util.spec_from_file_location("fitscore_bench_rtsp", module_path)
    if spec is None or spec.loader is None or not module_path.is_file():
        raise SystemExit(f"bench: --rtsp and --soak need {module_path} (a source checkout)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    camera = module.RtspCamera(mounts, loop=True)
    camera.start()
    return camera


async def bench_once(
    cameras: int,
    source: Path,
    *,
    fps: int,
    seconds: float,
    rtsp: bool,
    model_dir: Path,
    workers: int = 0,
) -> BenchRun:
    """A fresh server, ``cameras`` cameras on ``source`` for ``seconds``, measured."""
    with tempfile.TemporaryDirectory(prefix="fitscore-bench-") as work:
        settings = bench_settings(Path(work), model_dir, cameras, max_gap_s=10.0, workers=workers)
        rtsp_server = (
            start_rtsp_server({f"/cam{index}": source for index in range(cameras)})
            if rtsp
            else None
        )
        try:
            running = await create_server(settings)
            try:
                await running.wait_ready()
                return await measure_run(
                    running,
                    lambda index: (
                        source.resolve().as_uri()
                        if rtsp_server is None
                        else str(rtsp_server.url(f"/cam{index}"))
                    ),
                    cameras=cameras,
                    fps=fps,
                    seconds=seconds,
                    transport="file" if rtsp_server is None else "rtsp",
                    source=source,
                    rtsp_pid=None if rtsp_server is None else rtsp_server.pid,
                )
            finally:
                await running.stop(5.0)
        finally:
            if rtsp_server is not None:
                rtsp_server.stop()


# --- the sweep and the command -------------------------------------------------------------------


def sweep_sizes(max_cameras: int) -> Iterator[int]:
    """1, 2, 3, 4, 6, 8, 10, … up to ``max_cameras``."""
    size = 1
    while size <= max_cameras:
        yield size
        size += 1 if size < 4 else 2


async def sweep(
    run: Callable[[int], Awaitable[BenchRun]],
    max_cameras: int,
    report: Callable[[BenchRun], None],
) -> dict[str, Any]:
    """Grow N until real time fails, then bisect the gap; the largest N that held."""
    runs: list[BenchRun] = []

    async def measured(cameras: int) -> bool:
        result = await run(cameras)
        runs.append(result)
        report(result)
        return result.realtime

    best, failed = 0, None
    for cameras in sweep_sizes(max_cameras):
        if not await measured(cameras):
            failed = cameras
            break
        best = cameras
    while failed is not None and failed - best > 1:
        middle = (best + failed) // 2
        best, failed = (middle, failed) if await measured(middle) else (best, middle)
    return {
        "max_realtime_cameras": best,
        "runs": [item.to_dict() for item in sorted(runs, key=lambda item: item.cameras)],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "criteria": {
            "min_received_fraction": MIN_RECEIVED_FRACTION,
            "max_skipped_pct": MAX_SKIPPED_PCT,
            "min_pace": MIN_PACE,
        },
    }


def format_run(run: BenchRun) -> str:
    held = "yes" if run.realtime else "NO "
    return (
        f"N={run.cameras:<3} real time {held}  skipped {run.skipped_pct:5.2f} %  "
        f"received {run.received_pct:6.2f} %  pace {run.pace_min or 0:.3f}  "
        f"p50/p99 {run.latency_p50_ms or 0:.0f}/{run.latency_p99_ms or 0:.0f} ms  "
        f"CPU {run.cpu_pct:3.0f} % (box {run.box_cpu_pct:3.0f} %)  RSS {run.rss_mib_max:.0f} MiB  "
        f"load {run.load_average_start[0]:.2f}"
        + (f"  ({'; '.join(run.failed_checks)})" if run.failed_checks else "")
    )


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fitscore-server bench` (capacity) and `bench --soak` (endurance)."""
    parser.add_argument("--source", type=Path, help="H.264 video every camera plays (required)")
    parser.add_argument("--cameras", type=int, default=1, help="cameras at once (default 1)")
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS, help="camera frame rate")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per run")
    parser.add_argument("--sweep", action="store_true", help="find the most real-time cameras")
    parser.add_argument("--max-cameras", type=int, default=32, help="sweep limit (default 32)")
    parser.add_argument("--rtsp", action="store_true", help="serve the source over RTSP")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    parser.add_argument("--model-dir", type=Path, default=EngineSettings().model_dir)
    parser.add_argument("--workers", type=int, default=0, help="engine.workers (0 = default)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="endurance run instead")
    parser.add_argument("--faults", action="store_true", help="soak: kill/restart cameras")
    parser.add_argument("--assessment-seconds", type=float, default=60.0, help="soak")
    parser.add_argument("--fault-interval-s", type=float, default=180.0, help="soak")
    parser.add_argument("--sample-interval-s", type=float, default=10.0, help="soak")


def _usage_error(message: str) -> int:
    print(f"fitscore-server bench: {message}", file=sys.stderr)
    return 2


def run_in_fresh_process(cameras: int, source: Path, options: dict[str, Any]) -> BenchRun:
    """One run in a process of its own: nothing an earlier run left behind counts (RSS)."""
    return asyncio.run(bench_once(cameras, source, **options))


async def _sweep_in_fresh_processes(
    source: Path, options: dict[str, Any], max_cameras: int, report: Callable[[BenchRun], None]
) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:

        async def run(cameras: int) -> BenchRun:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, run_in_fresh_process, cameras, source, options)

        return await sweep(run, max_cameras, report)


def bench_command(arguments: argparse.Namespace) -> int:
    """Run what the arguments ask for; prints a table or JSON. Exit 2 on a usage error."""
    if arguments.source is None or not arguments.source.is_file():
        return _usage_error(f"--source: no such video: {arguments.source}")
    if arguments.cameras < 1 or arguments.fps < 1 or arguments.seconds <= 0:
        return _usage_error("--cameras, --fps and --seconds must be positive")
    if arguments.soak is not None:
        from server.soak import soak_command  # soak builds on this module

        return soak_command(arguments)
    source = prepare_source(
        arguments.source,
        fps=arguments.fps,
        min_seconds=arguments.seconds + SOURCE_MARGIN_S,
        cache_dir=arguments.cache_dir,
    )
    options = {
        "fps": arguments.fps,
        "seconds": arguments.seconds,
        "rtsp": arguments.rtsp,
        "model_dir": arguments.model_dir,
        "workers": arguments.workers,
    }

    def progress(result: BenchRun) -> None:
        print(format_run(result), file=sys.stderr if arguments.json else sys.stdout, flush=True)

    report: dict[str, Any]
    if arguments.sweep:
        report = asyncio.run(
            _sweep_in_fresh_processes(source, options, arguments.max_cameras, progress)
        )
        summary = f"max real-time cameras: {report['max_realtime_cameras']}"
    else:
        single = asyncio.run(bench_once(arguments.cameras, source, **options))
        progress(single)
        report, summary = single.to_dict(), ""
    text = json.dumps(report, indent=2)
    if arguments.output is not None:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text + "\n", encoding="utf-8")
    if arguments.json or summary:
        print(text if arguments.json else summary, flush=True)
    return 0
