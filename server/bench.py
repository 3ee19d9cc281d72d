"""`fitscore-server bench`: how many cameras one server judges in real time, through the real path.

Each run starts the real server in this process (real engine, real cameras, real recorders),
starts one timed assessment on each of N cameras over gRPC, follows every event stream until
``Finished`` and reports what the server did: frames received, judged and skipped, frame→event
latency (camera hand-over → judgement on the event loop; decoding is before the hand-over), CPU
(100 % = one core, this process only), RSS, and where the CPU went, thread by thread.

Cameras read the source as ``file://`` (paced at its frame rate, as a camera would deliver it) or,
with ``--rtsp``, from the GStreamer RTSP test server. A source whose frame rate differs from
``--fps`` (or that is shorter than a run) is transcoded once with libx264 (same size, GOP = fps,
no B-frames) into the cache directory.

A run holds real time when every assessment completed, the cameras delivered ≥ 97 % of
``seconds × fps × N`` frames, ≤ 1 % were skipped, and every camera's stream time advanced at
≥ 0.97 of wall time (a paced file that cannot be decoded fast enough falls behind instead of
losing frames, so the frame count alone cannot show it). ``--sweep`` finds the largest such N.
``--soak`` (see :mod:`server.soak`) runs for minutes with camera faults instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import math
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import grpc
import numpy as np

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.app import FitscoreServer, create_server
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
RSS_SAMPLE_INTERVAL_S = 0.5
FOLLOW_TIMEOUT_MARGIN_S = 60.0


# --- the source ---------------------------------------------------------------------------------


def prepare_source(source: Path, *, fps: int, min_seconds: float, cache_dir: Path) -> Path:
    """``source`` itself when it runs at ``fps`` for ``min_seconds``, else a cached transcode."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        duration_s = (container.duration or 0) / av.time_base
        width, height = stream.width, stream.height
    if abs(rate - fps) < 0.01 and duration_s >= min_seconds:
        return source
    length_s = math.ceil(max(duration_s, min_seconds))
    stat = source.stat()
    identity = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    key = hashlib.sha256(identity).hexdigest()[:12]
    target = cache_dir / f"{source.stem}-{width}x{height}-{fps}fps-{length_s}s-{key}.mp4"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench: transcoding {source} to {fps} frames/s, {length_s} s → {target}", file=sys.stderr
    )
    partial = target.with_name(target.name + ".part")
    _transcode(source, partial, fps=fps, rate=rate, frame_total=length_s * fps)
    os.replace(partial, target)
    return target


def _source_frames(source: Path) -> Iterator[av.VideoFrame]:
    """The source's frames, looped for ever."""
    while True:
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            yield from container.decode(stream)


def _transcode(source: Path, target: Path, *, fps: int, rate: float, frame_total: int) -> None:
    """H.264 at ``fps``: output frame k shows the source frame at k / fps (looping)."""
    with av.open(str(target), "w", format="mp4") as output:
        stream = output.add_stream(
            "libx264",
            rate=fps,
            options={
                "preset": "veryfast",
                "crf": "23",
                "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0",
            },
        )
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = fps
        stream.codec_context.max_b_frames = 0
        written = 0
        for source_index, frame in enumerate(_source_frames(source)):
            if written == 0:
                stream.width, stream.height = frame.width, frame.height
            # Output frames k with floor(k * rate / fps) == source_index show this frame.
            while written < frame_total and int(written * rate / fps) <= source_index:
                picture = frame.reformat(format="yuv420p")
                picture.pts = written
                picture.time_base = Fraction(1, fps)
                output.mux(stream.encode(picture))
                written += 1
            if written >= frame_total:
                break
        output.mux(stream.encode(None))


# --- the process ---------------------------------------------------------------------------------


def rss_mib() -> float:
    """Resident set size of this process (VmRSS), MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of another process (the RTSP server), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_group(name: str | None) -> str:
    if name is None:
        return "native (FFmpeg decoders, gRPC core)"
    if name == "fitscore-batcher":
        return "batcher (pose inference)"
    if name.startswith("camera-"):
        return "cameras (demux, decode, RGB, recording)"
    if name == "MainThread":
        return "event loop (gRPC, events, scoring)"
    return "other Python threads"


def thread_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every live thread of this process: native id → (group, user + system CPU seconds)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    threads: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended meanwhile
        group = _thread_group(names.get(int(entry)))
        threads[int(entry)] = (group, (int(fields[11]) + int(fields[12])) / ticks_per_s)
    return threads


def _cpu_by_group(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], total_s: float
) -> dict[str, float]:
    """CPU seconds per thread group between two snapshots; threads that ended are 'exited'."""
    groups: dict[str, float] = {}
    for thread_id, (group, seconds) in after.items():
        spent = seconds - before.get(thread_id, (group, 0.0))[1]
        groups[group] = groups.get(group, 0.0) + spent
    groups["exited threads"] = max(0.0, total_s - sum(groups.values()))
    return groups


# --- one run -------------------------------------------------------------------------------------


def bench_settings(video_root: Path, model_dir: Path, cameras: int, max_gap_s: float) -> Settings:
    """The real server's settings for a benchmark or soak on 127.0.0.1 (any free port)."""
    return Settings(
        listen="127.0.0.1:0",
        video_root=video_root,
        log_level="WARNING",
        engine=EngineSettings(model_dir=model_dir),
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
    wall_s = (progress[-1].time.ToNanoseconds() - started.time.ToNanoseconds()) / 1e9
    stream_s = progress[-1].progress.elapsed.ToNanoseconds() / 1e9
    return stream_s / wall_s if wall_s > 0 else None


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
    end_reasons: dict[str, int]
    latency_samples: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    wall_s: float
    cpu_pct: float
    cpu_by_thread_pct: dict[str, float]
    rtsp_server_cpu_pct: float | None
    rss_mib_max: float
    rss_mib_end: float
    inference_batches: int
    mean_batch_size: float | None
    mean_inference_ms: float | None
    batcher_busy_pct: float
    load_average_start: list[float]
    load_average_end: list[float]
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)


def _sample(running: FitscoreServer, name: str) -> float:
    return float(running.metrics.registry.get_sample_value(name) or 0.0)


async def _sample_rss(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_mib())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_INTERVAL_S)


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
        duration = pb.StartAssessmentRequest().duration
        duration.FromNanoseconds(int(seconds * 1e9))
        load_start = list(os.getloadavg())
        running.metrics.recent_frame_latencies_s.clear()
        inference_before = _sample(running, "fitscore_inference_seconds_sum")
        batches_before = _sample(running, "fitscore_batch_size_count")
        frames_in_batches_before = _sample(running, "fitscore_batch_size_sum")
        rtsp_before = None if rtsp_pid is None else _process_cpu_seconds(rtsp_pid)
        threads_before, cpu_before, wall_before = thread_cpu_seconds(), cpu_seconds(), time.time()
        rss_samples: list[float] = []
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(rss_samples, stop_sampling))

        async def one(index: int) -> list[pb.AssessmentEvent]:
            started = await stub.StartAssessment(
                pb.StartAssessmentRequest(
                    camera_id=f"cam{index}",
                    source_url=url_for(index),
                    duration=duration,
                    output_path=f"cam{index}.mp4",
                )
            )
            return await follow_events(stub, started.assessment.assessment_id)

        timeout_s = seconds + FOLLOW_TIMEOUT_MARGIN_S + cameras
        followed = await asyncio.wait_for(
            asyncio.gather(*(one(index) for index in range(cameras))), timeout_s
        )
        wall_s = time.time() - wall_before
        cpu_s = cpu_seconds() - cpu_before
        by_group = _cpu_by_group(threads_before, thread_cpu_seconds(), cpu_s)
        stop_sampling.set()
        await sampler
    rtsp_after = None if rtsp_pid is None else _process_cpu_seconds(rtsp_pid)
    finals = [events[-1].finished.assessment for events in followed]
    paces = [pace for pace in map(stream_pace, followed) if pace is not None]
    latencies_s = np.array(running.metrics.recent_frame_latencies_s, dtype=np.float64)
    batches = int(_sample(running, "fitscore_batch_size_count") - batches_before)
    inference_s = _sample(running, "fitscore_inference_seconds_sum") - inference_before
    in_batches = _sample(running, "fitscore_batch_size_sum") - frames_in_batches_before
    end_reasons: dict[str, int] = {}
    for final in finals:
        name = pb.EndReason.Name(final.end_reason).removeprefix("END_REASON_")
        end_reasons[name] = end_reasons.get(name, 0) + 1
    expected = round(seconds * fps) * cameras
    received = sum(final.frames_received for final in finals)
    skipped = sum(final.frames_skipped for final in finals)
    skipped_pct = 100.0 * skipped / received if received else 100.0
    pace_min = min(paces) if len(paces) == cameras else None
    failed = [
        check
        for check, passed in (
            ("not every assessment completed", end_reasons == {"COMPLETED": cameras}),
            (
                f"received < {MIN_RECEIVED_FRACTION:.0%}",
                received >= MIN_RECEIVED_FRACTION * expected,
            ),
            (f"skipped > {MAX_SKIPPED_PCT:g} %", skipped_pct <= MAX_SKIPPED_PCT),
            (f"stream pace < {MIN_PACE:g}", pace_min is not None and pace_min >= MIN_PACE),
        )
        if not passed
    ]

    def percentile_ms(value: float) -> float | None:
        return (
            round(float(np.percentile(latencies_s, value)) * 1000, 2) if latencies_s.size else None
        )

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
        received_pct=round(100.0 * received / expected, 2) if expected else 0.0,
        skipped_pct=round(skipped_pct, 2),
        pace_min=None if pace_min is None else round(pace_min, 3),
        end_reasons=end_reasons,
        latency_samples=int(latencies_s.size),
        latency_p50_ms=percentile_ms(50),
        latency_p99_ms=percentile_ms(99),
        wall_s=round(wall_s, 2),
        cpu_pct=round(100.0 * cpu_s / wall_s, 1),
        cpu_by_thread_pct={
            group: round(100.0 * spent / wall_s, 1) for group, spent in sorted(by_group.items())
        },
        rtsp_server_cpu_pct=(
            None
            if rtsp_before is None or rtsp_after is None
            else round(100.0 * (rtsp_after - rtsp_before) / wall_s, 1)
        ),
        rss_mib_max=round(max(rss_samples), 1),
        rss_mib_end=round(rss_samples[-1], 1),
        inference_batches=batches,
        mean_batch_size=round(in_batches / batches, 2) if batches else None,
        mean_inference_ms=round(1000 * inference_s / batches, 2) if batches else None,
        batcher_busy_pct=round(100.0 * inference_s / wall_s, 1),
        load_average_start=[round(value, 2) for value in load_start],
        load_average_end=[round(value, 2) for value in os.getloadavg()],
    )


@contextlib.contextmanager
def rtsp_cameras(mounts: dict[str, Path]) -> Iterator[Any]:
    """One GStreamer RTSP test server (tests/support/rtsp.py) looping ``mounts``."""
    camera_type = rtsp_camera_type()
    camera = camera_type(mounts, loop=True)
    camera.start()
    try:
        yield camera
    finally:
        camera.stop()


def rtsp_camera_type() -> Any:
    """The RTSP test server's controller; it lives with the tests (run from the repository)."""
    try:
        from tests.support.rtsp import RtspCamera
    except ImportError as error:
        raise SystemExit(
            f"bench: --rtsp and --soak need tests/support/rtsp.py from the repository ({error}); "
            "run from the repository root with the dev extras and Debian's python3-gi"
        ) from error
    return RtspCamera


async def bench_once(
    cameras: int, source: Path, *, fps: int, seconds: float, rtsp: bool, model_dir: Path
) -> BenchRun:
    """A fresh server, ``cameras`` cameras on ``source`` for ``seconds``, measured."""
    with tempfile.TemporaryDirectory(prefix="fitscore-bench-") as work:
        settings = bench_settings(Path(work), model_dir, cameras, max_gap_s=10.0)
        with contextlib.ExitStack() as stack:
            rtsp_pid: int | None = None
            if rtsp:
                camera = stack.enter_context(
                    rtsp_cameras({f"/cam{index}": source for index in range(cameras)})
                )
                rtsp_pid = camera.pid

                def url_for(index: int) -> str:
                    return str(camera.url(f"/cam{index}"))
            else:

                def url_for(index: int) -> str:
                    return source.resolve().as_uri()

            running = await create_server(settings)
            try:
                await running.wait_ready()
                return await measure_run(
                    running,
                    url_for,
                    cameras=cameras,
                    fps=fps,
                    seconds=seconds,
                    transport="rtsp" if rtsp else "file",
                    source=source,
                    rtsp_pid=rtsp_pid,
                )
            finally:
                await running.stop(5.0)


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
        "runs": [asdict(item) for item in sorted(runs, key=lambda item: item.cameras)],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "criteria": {
            "min_received_fraction": MIN_RECEIVED_FRACTION,
            "max_skipped_pct": MAX_SKIPPED_PCT,
            "min_pace": MIN_PACE,
        },
    }


def format_run(run: BenchRun) -> str:
    latency = f"{run.latency_p50_ms}/{run.latency_p99_ms} ms"
    return (
        f"N={run.cameras:<3} real time {'yes' if run.realtime else 'NO '}  "
        f"skipped {run.skipped_pct:5.2f} %  received {run.received_pct:6.2f} %  "
        f"pace {run.pace_min}  p50/p99 {latency}  CPU {run.cpu_pct:5.1f} %  "
        f"RSS {run.rss_mib_max:.0f} MiB  batch {run.mean_batch_size}  "
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
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="endurance run instead")
    parser.add_argument("--faults", action="store_true", help="soak: kill/restart cameras")
    parser.add_argument("--assessment-seconds", type=float, default=60.0, help="soak")
    parser.add_argument("--fault-interval-s", type=float, default=180.0, help="soak")
    parser.add_argument("--sample-interval-s", type=float, default=10.0, help="soak")


def bench_command(arguments: argparse.Namespace) -> int:
    """Run what the arguments ask for; prints a table or JSON. Exit 2 on a usage error."""
    if arguments.source is None or not arguments.source.is_file():
        print(
            f"fitscore-server bench: --source: no such video: {arguments.source}", file=sys.stderr
        )
        return 2
    if arguments.cameras < 1 or arguments.fps < 1 or arguments.seconds <= 0:
        print(
            "fitscore-server bench: --cameras, --fps and --seconds must be positive",
            file=sys.stderr,
        )
        return 2
    if arguments.soak is not None:
        from server.soak import soak_command  # soak builds on this module

        return soak_command(arguments)
    source = prepare_source(
        arguments.source,
        fps=arguments.fps,
        min_seconds=arguments.seconds + SOURCE_MARGIN_S,
        cache_dir=arguments.cache_dir,
    )

    def run(cameras: int) -> Coroutine[Any, Any, BenchRun]:
        return bench_once(
            cameras,
            source,
            fps=arguments.fps,
            seconds=arguments.seconds,
            rtsp=arguments.rtsp,
            model_dir=arguments.model_dir,
        )

    def progress(result: BenchRun) -> None:
        print(format_run(result), file=sys.stderr if arguments.json else sys.stdout, flush=True)

    report: dict[str, Any]
    if arguments.sweep:
        report = asyncio.run(sweep(run, arguments.max_cameras, progress))
        summary = f"max real-time cameras: {report['max_realtime_cameras']}"
    else:
        single = asyncio.run(run(arguments.cameras))
        progress(single)
        report, summary = asdict(single), ""
    text = json.dumps(report, indent=2)
    if arguments.output is not None:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text + "\n", encoding="utf-8")
    if arguments.json:
        print(text, flush=True)
    elif summary:
        print(summary, flush=True)
    return 0
