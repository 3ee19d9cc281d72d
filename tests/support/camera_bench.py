"""Measure a camera: CPU time per frame (demux + decode + RGB handoff) and open latency.

    .venv/bin/python -m tests.support.camera_bench [--media FILE] [--seconds 10] [--opens 5]

Serves ``--media`` (default: shared/media/pushup_side_gg.mp4, 1280x720 H.264) in a loop from the
GStreamer RTSP test server on 127.0.0.1, reads it with :class:`server.cameras.Camera` over TCP
and prints one JSON object per measurement. CPU time is this process's (the server runs in its
own process), so it covers demux, restamping, the GOP buffer, decoding (FFmpeg's threads
included), the RGB conversion and the frame callback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engines import CameraFrame
from server.cameras import Camera, CameraOptions
from tests.support.rtsp import RtspCamera

DEFAULT_MEDIA = Path(__file__).resolve().parents[3] / "shared" / "media" / "pushup_side_gg.mp4"


@dataclass(frozen=True)
class DecodeCost:
    decoder_thread_type: str
    decoding: bool
    frames: int
    packets: int
    seconds: float
    cpu_ms_per_frame: float
    frames_per_s: float


@dataclass(frozen=True)
class OpenLatency:
    opens: int
    median_open_s: float
    max_open_s: float
    median_first_frame_s: float


class _Counter:
    def __init__(self) -> None:
        self.frames = 0
        self.first = threading.Event()

    def on_frame(self, _frame: CameraFrame) -> bool:
        self.frames += 1
        self.first.set()
        return True


def measure_decode_cost(
    url: str, *, seconds: float, thread_type: str = "AUTO", decoding: bool = True
) -> DecodeCost:
    """Steady-state CPU per frame, after one second of warm-up."""
    counter = _Counter()
    camera = Camera("bench", url, CameraOptions(decoder_thread_type=thread_type))
    if decoding:
        camera.set_frame_sink(counter.on_frame)
    camera.start()
    try:
        camera.wait_ready(10.0)
        time.sleep(1.0)
        frames_before, packets_before = counter.frames, camera.counters.packets_received
        cpu_before_s, wall_before_s = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu_s = time.process_time() - cpu_before_s
        wall_s = time.monotonic() - wall_before_s
        packets = camera.counters.packets_received - packets_before
        frames = counter.frames - frames_before
    finally:
        camera.close()
    per = frames if decoding else packets
    return DecodeCost(
        thread_type,
        decoding,
        frames,
        packets,
        round(wall_s, 2),
        round(1000 * cpu_s / max(per, 1), 3),
        round(per / wall_s, 2),
    )


def measure_open_latency(url: str, *, opens: int) -> OpenLatency:
    """Open a fresh camera ``opens`` times: time to the first packet and to the first frame."""
    open_s: list[float] = []
    first_frame_s: list[float] = []
    for _ in range(opens):
        counter = _Counter()
        camera = Camera("bench", url)
        camera.set_frame_sink(counter.on_frame)
        started_s = time.monotonic()
        camera.start()
        try:
            if not counter.first.wait(10.0):
                raise RuntimeError(f"no frame from {url}: {camera.status.detail}")
            first_frame_s.append(time.monotonic() - started_s)
            latency_s = camera.counters.open_latency_s
            assert latency_s is not None
            open_s.append(latency_s)
        finally:
            camera.close()
    return OpenLatency(
        opens,
        round(statistics.median(open_s), 3),
        round(max(open_s), 3),
        round(statistics.median(first_frame_s), 3),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--opens", type=int, default=5)
    parser.add_argument("--thread-types", default="AUTO,SLICE")
    args = parser.parse_args(argv)
    server = RtspCamera({"/bench": args.media}, loop=True)
    server.start()
    try:
        url = server.url("/bench")
        print(json.dumps({"media": str(args.media), "url": url}), flush=True)
        print(json.dumps(asdict(measure_open_latency(url, opens=args.opens))), flush=True)
        demux = measure_decode_cost(url, seconds=args.seconds, decoding=False)
        print(json.dumps(asdict(demux)), flush=True)
        for thread_type in args.thread_types.split(","):
            cost = measure_decode_cost(url, seconds=args.seconds, thread_type=thread_type)
            print(json.dumps(asdict(cost)), flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
