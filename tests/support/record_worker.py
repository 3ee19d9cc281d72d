"""A recording in a process of its own, for the crash and disk-full tests.

``python -m tests.support.record_worker SOURCE OUTPUT [--max-file-bytes N] [--seconds S]``
records SOURCE (a path or URL, opened as a camera) into OUTPUT and prints one JSON object per
line: ``{"frames_written": n, "frames_seen": m}`` every 0.1 s, and at the end
``{"failure": ..., "finish_error": ..., "frames_after_failure": k, "result_frames": r}``.
``--max-file-bytes`` sets RLIMIT_FSIZE (with SIGXFSZ ignored, writes past it fail with EFBIG,
as on a full disk).
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import threading
import time

from engines import CameraFrame
from server.cameras import Camera, CameraOptions
from server.recording import Recorder, RecordingError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("output")
    parser.add_argument("--max-file-bytes", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--unpaced", action="store_true")
    args = parser.parse_args(argv)
    if args.max_file_bytes:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.max_file_bytes, args.max_file_bytes))

    frames_seen = 0
    failed_at_frame: int | None = None
    failures: list[RecordingError] = []
    lock = threading.Lock()

    def on_frame(_frame: CameraFrame) -> bool:
        nonlocal frames_seen
        with lock:
            frames_seen += 1
        return True

    def on_failure(error: RecordingError) -> None:
        nonlocal failed_at_frame
        with lock:
            failures.append(error)
            failed_at_frame = frames_seen

    options = CameraOptions(loop_files=True, realtime_files=not args.unpaced)
    camera = Camera("worker", args.source, options)
    camera.start()
    camera.wait_ready(5.0)
    camera.set_frame_sink(on_frame)
    recorder = Recorder(args.output, on_failure=on_failure)
    recorder.attach(camera)
    deadline_s = time.monotonic() + args.seconds
    while time.monotonic() < deadline_s:
        print(
            json.dumps({"frames_written": recorder.frames_written, "frames_seen": frames_seen}),
            flush=True,
        )
        if failures and frames_seen - (failed_at_frame or 0) >= 50:
            break
        time.sleep(0.1)
    summary: dict[str, object] = {"failure": str(failures[0]) if failures else None}
    try:
        summary["result_frames"] = recorder.finish().frames_written
    except RecordingError as error:
        summary["finish_error"] = str(error)
    summary["frames_after_failure"] = frames_seen - (failed_at_frame or 0) if failures else 0
    camera.close()
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
