"""`fitscore-server bench --soak MINUTES [--faults]`: a long run, checked for losses and leaks.

N cameras, each served by its own GStreamer RTSP test server process (tests/support/rtsp.py),
run assessments back to back for MINUTES. With ``--faults`` one camera's server is killed
(SIGKILL) every ``--fault-interval-s``, cameras in turn, and started again on the same port a
moment later, so the server sees what a camera that reboots or drops off the network does.
Every ``--sample-interval-s`` the soak samples this process: RSS, open file descriptors, threads.

At the end it checks every assessment: its event log on disk (``<video>.events.jsonl``) must
number its events 1..n without a gap and end with Finished, and the subscriber must have received
exactly those events (lost events = sequences in the log the subscriber never saw, plus gaps); its
video must exist and decode from the first frame to the last with PyAV (corrupt videos).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import grpc

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.app import FitscoreServer, create_server
from server.bench import (
    bench_settings,
    count_end_reasons,
    follow_events,
    start_rtsp_server,
)
from server.bench_probes import open_fds, prepare_source, rss_mib
from server.events import read_jsonl

MIN_ASSESSMENT_S = 5.0
"""A camera starts no assessment shorter than this before the soak ends."""
FAULT_DOWNTIME_S = 2.0
"""How long a killed camera stays down before it is started again."""
MAX_GAP_S = 10.0
"""The server's default: a camera silent for longer fails its assessment."""
MAX_PROBLEMS_LISTED = 20


@dataclass
class Followed:
    """One assessment as the soak saw it: what the subscriber received, ending with Finished."""

    camera_id: str
    events: list[pb.AssessmentEvent]

    @property
    def final(self) -> pb.Assessment:
        return self.events[-1].finished.assessment


@dataclass(frozen=True)
class ProcessSample:
    at_s: float
    rss_mib: float
    open_fds: int
    threads: int
    """Python threads (``threading.active_count()``)."""
    native_threads: int
    """Every thread of the process (FFmpeg's and gRPC's included)."""
    running_assessments: int


def sample_process(at_s: float, running: FitscoreServer) -> ProcessSample:
    gauge = running.metrics.registry.get_sample_value("fitscore_active_assessments")
    return ProcessSample(
        at_s=round(at_s, 1),
        rss_mib=round(rss_mib(), 1),
        open_fds=open_fds(),
        threads=threading.active_count(),
        native_threads=len(os.listdir("/proc/self/task")),
        running_assessments=int(gauge or 0),
    )


def thread_names() -> dict[str, int]:
    """Threads of this process by kernel name, digits folded (``av:h264:df#``): finds leaks."""
    names: list[str] = []
    for entry in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{entry}/comm") as comm:
            names.append(re.sub(r"\d+", "#", comm.read().strip()))
    return {name: names.count(name) for name in sorted(set(names))}


def event_problems(logged: list[pb.AssessmentEvent], followed: Followed) -> tuple[int, list[str]]:
    """Lost events (logged but never received, or missing from the numbering) and what is wrong.

    ``logged`` is the assessment's event log as read back from disk.
    """
    name = f"{followed.camera_id}/{followed.final.assessment_id}"
    problems: list[str] = []
    logged_sequences = [event.sequence for event in logged]
    last = max(logged_sequences + [event.sequence for event in followed.events], default=0)
    if logged_sequences != list(range(1, len(logged) + 1)):
        problems.append(f"{name}: the event log is not numbered 1..{len(logged)}")
    if not logged or logged[-1].WhichOneof("payload") != "finished":
        problems.append(f"{name}: the event log does not end with Finished")
    received = {event.sequence: event for event in followed.events}
    lost = [sequence for sequence in range(1, last + 1) if sequence not in received]
    if lost:
        problems.append(f"{name}: the subscriber never received events {lost[:10]}")
    if len(received) != len(followed.events):
        problems.append(f"{name}: the subscriber received an event twice")
    differing = [
        event.sequence
        for event in logged
        if event.sequence in received
        and received[event.sequence].SerializeToString(deterministic=True)
        != event.SerializeToString(deterministic=True)
    ]
    if differing:
        problems.append(f"{name}: logged and received events differ at {differing[:10]}")
    return len(lost), problems


def video_problem(path: Path) -> tuple[int, str | None]:
    """Frames decoded from the video, and why it is corrupt (None when it decodes to the end)."""
    if not path.is_file():
        return 0, f"{path}: missing"
    frames = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                frames += 1
    except (av.FFmpegError, IndexError, OSError) as error:
        return frames, f"{path}: unreadable after {frames} frames ({error})"
    return frames, None if frames else f"{path}: no frame decodes"


async def _assessments_on(
    stub: pb_grpc.AssessmentServiceAsyncStub,
    camera_id: str,
    url: str,
    *,
    deadline: float,
    assessment_s: float,
    results: list[Followed],
) -> None:
    """Assessments back to back on one camera until the deadline (the last one is shorter)."""
    number = 0
    while (remaining_s := deadline - time.monotonic()) >= MIN_ASSESSMENT_S:
        request = pb.StartAssessmentRequest(
            camera_id=camera_id, source_url=url, output_path=f"{camera_id}/{number:04d}.mp4"
        )
        request.duration.FromNanoseconds(int(min(assessment_s, remaining_s) * 1e9))
        started = await stub.StartAssessment(request)
        events = await follow_events(stub, started.assessment.assessment_id)
        results.append(Followed(camera_id, events))
        number += 1


async def _inject_faults(
    cameras: list[Any],
    *,
    interval_s: float,
    deadline: float,
    origin: float,
    control: concurrent.futures.Executor,
    log: list[dict[str, Any]],
) -> None:
    """Kill one camera's RTSP server every ``interval_s`` (in turn) and start it again."""
    loop = asyncio.get_running_loop()
    number = 0
    while time.monotonic() + interval_s + FAULT_DOWNTIME_S < deadline:
        await asyncio.sleep(interval_s)
        camera = cameras[number % len(cameras)]
        port = camera.port
        await loop.run_in_executor(control, camera.kill)
        killed_s = time.monotonic() - origin
        await asyncio.sleep(FAULT_DOWNTIME_S)
        await loop.run_in_executor(control, camera.start, port)
        log.append({"at_s": round(killed_s, 1), "camera": f"cam{number % len(cameras)}"})
        number += 1


async def _sample_every(
    interval_s: float, origin: float, running: FitscoreServer, samples: list[ProcessSample]
) -> None:
    while True:
        samples.append(sample_process(time.monotonic() - origin, running))
        await asyncio.sleep(interval_s)


def _summary(values: list[float], warm_index: int) -> dict[str, float]:
    return {
        "first": values[0],
        "after_warm_up": values[warm_index],
        "last": values[-1],
        "max": max(values),
        "growth_after_warm_up": round(values[-1] - values[warm_index], 1),
    }


def verify(followed: list[Followed]) -> dict[str, Any]:
    """Check every assessment's event log and video (blocking: run it on a thread)."""
    lost_total, event_issues, video_issues, video_frames = 0, [], [], 0
    for item in followed:
        logged = read_jsonl(Path(item.final.events_path))
        lost, problems = event_problems(logged, item)
        lost_total += lost
        event_issues += problems
        frames, problem = video_problem(Path(item.final.video_path))
        video_frames += frames
        if problem is not None:
            video_issues.append(problem)
    return {
        "lost_events": lost_total,
        "event_problems": event_issues[:MAX_PROBLEMS_LISTED],
        "videos_checked": len(followed),
        "corrupt_videos": len(video_issues),
        "video_problems": video_issues[:MAX_PROBLEMS_LISTED],
        "video_frames_decoded": video_frames,
    }


async def soak(
    source: Path,
    *,
    minutes: float,
    cameras: int,
    faults: bool,
    assessment_s: float,
    fault_interval_s: float,
    sample_interval_s: float,
    model_dir: Path,
) -> dict[str, Any]:
    """Run the soak and return its report (see the module docstring)."""
    control = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="soak-rtsp")
    loop = asyncio.get_running_loop()
    followed: list[Followed] = []
    samples: list[ProcessSample] = []
    fault_log: list[dict[str, Any]] = []
    rtsp_servers: list[Any] = []
    background: list[asyncio.Task[None]] = []
    with tempfile.TemporaryDirectory(prefix="fitscore-soak-") as work:
        try:
            # The servers die with the thread that started them: start them all on one thread.
            for index in range(cameras):
                mounts = {f"/cam{index}": source}
                rtsp_servers.append(await loop.run_in_executor(control, start_rtsp_server, mounts))
            settings = bench_settings(Path(work), model_dir, cameras, max_gap_s=MAX_GAP_S)
            running = await create_server(settings)
            try:
                await running.wait_ready()
                origin = time.monotonic()
                deadline = origin + minutes * 60.0
                load_start, names_start = os.getloadavg(), thread_names()
                sampler = asyncio.create_task(
                    _sample_every(sample_interval_s, origin, running, samples)
                )
                injector = asyncio.create_task(
                    _inject_faults(
                        rtsp_servers,
                        interval_s=fault_interval_s,
                        deadline=deadline,
                        origin=origin,
                        control=control,
                        log=fault_log,
                    )
                    if faults
                    else asyncio.sleep(0)
                )
                background += [sampler, injector]
                async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                    stub = pb_grpc.AssessmentServiceStub(channel)
                    await asyncio.gather(
                        *(
                            _assessments_on(
                                stub,
                                f"cam{index}",
                                str(camera.url(f"/cam{index}")),
                                deadline=deadline,
                                assessment_s=assessment_s,
                                results=followed,
                            )
                            for index, camera in enumerate(rtsp_servers)
                        )
                    )
                await injector
                samples.append(sample_process(time.monotonic() - origin, running))
                sampler.cancel()
                load_end, names_end = os.getloadavg(), thread_names()
            finally:
                for task in background:
                    task.cancel()  # after a failure: no fault may hit the teardown
                await running.stop(10.0)
        finally:
            for camera in rtsp_servers:
                await loop.run_in_executor(control, camera.stop)
            control.shutdown()
        checks = await asyncio.to_thread(verify, followed)
    finals = [item.final for item in followed]
    codes = [
        event.warning.code
        for item in followed
        for event in item.events
        if event.HasField("warning")
    ]
    warm_index = next(
        (index for index, sample in enumerate(samples) if sample.at_s >= assessment_s),
        len(samples) - 1,
    )
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "minutes": minutes,
        "cameras": cameras,
        "source": str(source),
        "faults_enabled": faults,
        "assessment_seconds": assessment_s,
        "assessments": len(followed),
        "end_reasons": count_end_reasons(finals),
        "events_received": sum(len(item.events) for item in followed),
        "warnings": {
            pb.WarningCode.Name(code).removeprefix("WARNING_CODE_"): codes.count(code)
            for code in sorted(set(codes))
        },
        **checks,
        "frames_received": sum(final.frames_received for final in finals),
        "frames_judged": sum(final.frames_judged for final in finals),
        "frames_skipped": sum(final.frames_skipped for final in finals),
        "faults": fault_log,
        "rss_mib": _summary([sample.rss_mib for sample in samples], warm_index),
        "open_fds": _summary([sample.open_fds for sample in samples], warm_index),
        "threads": _summary([sample.threads for sample in samples], warm_index),
        "native_threads": _summary([sample.native_threads for sample in samples], warm_index),
        "thread_names_start": names_start,
        "thread_names_end": names_end,
        "load_average_start": [round(value, 2) for value in load_start],
        "load_average_end": [round(value, 2) for value in load_end],
        "samples": [asdict(sample) for sample in samples],
    }
    report["ok"] = checks["lost_events"] == 0 and checks["corrupt_videos"] == 0 and bool(followed)
    return report


def format_soak(report: dict[str, Any]) -> str:
    rss, fds, threads = report["rss_mib"], report["open_fds"], report["threads"]
    return "\n".join(
        [
            f"soak {report['minutes']:g} min, {report['cameras']} cameras, "
            f"{report['assessments']} assessments {report['end_reasons']}, "
            f"{len(report['faults'])} camera faults",
            f"lost events {report['lost_events']} (of {report['events_received']} received), "
            f"corrupt videos {report['corrupt_videos']} of {report['videos_checked']}",
            f"RSS {rss['first']} → {rss['after_warm_up']} → {rss['last']} MiB (max {rss['max']}), "
            f"fds {fds['first']} → {fds['last']}, threads {threads['first']} → {threads['last']}",
            *report["event_problems"],
            *report["video_problems"],
            "OK" if report["ok"] else "FAILED",
        ]
    )


def soak_command(arguments: argparse.Namespace) -> int:
    """`bench --soak`: 0 when nothing was lost or corrupt, 1 otherwise."""
    source = prepare_source(
        arguments.source,
        fps=arguments.fps,
        min_seconds=0.0,
        cache_dir=arguments.cache_dir,
    )
    report = asyncio.run(
        soak(
            source,
            minutes=arguments.soak,
            cameras=arguments.cameras,
            faults=arguments.faults,
            assessment_s=arguments.assessment_seconds,
            fault_interval_s=arguments.fault_interval_s,
            sample_interval_s=arguments.sample_interval_s,
            model_dir=arguments.model_dir,
        )
    )
    text = json.dumps(report, indent=2)
    if arguments.output is not None:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text + "\n", encoding="utf-8")
    print(text if arguments.json else format_soak(report), flush=True)
    return 0 if report["ok"] else 1
