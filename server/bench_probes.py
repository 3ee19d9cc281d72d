"""What a benchmark feeds the cameras and what it reads off the process while they run.

The source: a video not at the requested frame rate (or shorter than a run) is transcoded once with
PyAV (libx264, same size, GOP = fps, no B-frames, a typical camera's bit rate) and cached. The
process: CPU from getrusage and /proc/self/task (per thread group), RSS sampled while a run lasts,
open descriptors, the machine's busy CPU and load average. Used by :mod:`server.bench` and
:mod:`server.soak`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av

if TYPE_CHECKING:
    from server.app import FitscoreServer

CAMERA_BITRATE_BPS = 2_000_000
"""Transcodes aim at a typical 720p camera's bit rate (decoding cost grows with it)."""
RSS_SAMPLE_INTERVAL_S = 0.5


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
    name = f"{source.stem}-{width}x{height}-{fps}fps-{length_s}s-{CAMERA_BITRATE_BPS // 1000}k"
    target = cache_dir / f"{name}-{key}.mp4"
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
                "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0",
            },
        )
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = CAMERA_BITRATE_BPS
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
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _cpu_s(stat_path: str) -> float | None:
    """User + system CPU seconds from a /proc …/stat file; None when the task is gone."""
    try:
        with open(stat_path, encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _box_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


def _thread_group(name: str | None) -> str:
    if name is None:
        return "native (FFmpeg decoders, gRPC core)"
    if name.startswith("fitscore-batcher"):
        return "batchers (pose inference)"
    if name.startswith("camera-"):
        return "cameras (demux, decode, RGB, recording)"
    if name == "MainThread":
        return "event loop (gRPC, events, scoring)"
    return "other Python threads"


def thread_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every live thread of this process: native id → (group, user + system CPU seconds)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    threads = {}
    for entry in os.listdir("/proc/self/task"):
        seconds = _cpu_s(f"/proc/self/task/{entry}/stat")
        if seconds is not None:
            threads[int(entry)] = (_thread_group(names.get(int(entry))), seconds)
    return threads


@dataclass(frozen=True)
class Snapshot:
    """The process and server counters at one moment; two of them make a run's figures."""

    wall_s: float
    cpu_s: float
    threads: dict[int, tuple[str, float]]
    inference_s: float
    batches: float
    batched_frames: float
    rtsp_cpu_s: float | None
    box_jiffies: tuple[int, int]
    rss_mib: float

    @classmethod
    def take(cls, running: FitscoreServer, rtsp_pid: int | None) -> Snapshot:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        value = running.metrics.registry.get_sample_value
        return cls(
            wall_s=time.monotonic(),
            cpu_s=usage.ru_utime + usage.ru_stime,
            threads=thread_cpu_seconds(),
            inference_s=value("fitscore_inference_seconds_sum") or 0.0,
            batches=value("fitscore_batch_size_count") or 0.0,
            batched_frames=value("fitscore_batch_size_sum") or 0.0,
            rtsp_cpu_s=None if rtsp_pid is None else _cpu_s(f"/proc/{rtsp_pid}/stat"),
            box_jiffies=_box_jiffies(),
            rss_mib=rss_mib(),
        )

    def box_cpu_pct(self, before: Snapshot) -> float:
        """The whole machine's busy CPU meanwhile (every process), % of one core."""
        busy = self.box_jiffies[0] - before.box_jiffies[0]
        total = self.box_jiffies[1] - before.box_jiffies[1]
        return 100.0 * (os.cpu_count() or 1) * busy / total if total else 0.0

    def cpu_by_thread_pct(self, before: Snapshot) -> dict[str, float]:
        """Per thread group, % of one core; threads that ended meanwhile are 'exited'."""
        wall_s, groups = self.wall_s - before.wall_s, {"exited threads": self.cpu_s - before.cpu_s}
        for thread_id, (group, seconds) in self.threads.items():
            spent = seconds - before.threads.get(thread_id, (group, 0.0))[1]
            groups[group] = groups.get(group, 0.0) + spent
            groups["exited threads"] -= spent
        return {group: 100 * max(0.0, spent) / wall_s for group, spent in sorted(groups.items())}


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return list(os.getloadavg())


async def sample_rss(samples: list[float], stop: asyncio.Event) -> None:
    """Append :func:`rss_mib` to ``samples`` every ``RSS_SAMPLE_INTERVAL_S`` until ``stop``."""
    while not stop.is_set():
        samples.append(rss_mib())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_INTERVAL_S)
