"""`make demo`: a local RTSP camera playing a video, the server, and a followed assessment.

    make demo                       # the shared push-up clip when ../shared/media has it
    make demo VIDEO=my_clip.mp4     # any H.264 MP4
    make demo VIDEO=clip.mp4 EXERCISE=sit-up

Needs Debian's GStreamer RTSP server for the camera (see the README). Everything listens on
127.0.0.1 only and stops when the assessment ends or on Ctrl-C.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.rtsp import RtspCamera  # noqa: E402  (the test camera doubles as the demo's)

SHARED_CLIP = ROOT.parent / "shared" / "media" / "pushup_side_gg.mp4"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _frame_count(video: Path) -> int:
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for _ in container.demux(stream) if _.size)


def main() -> int:
    video = Path(os.environ.get("VIDEO") or SHARED_CLIP)
    if not video.is_file():
        print(f"demo: no video at {video}; run `make demo VIDEO=path/to/clip.mp4`", file=sys.stderr)
        return 2
    exercise = os.environ.get("EXERCISE", "push-up")
    frames = int(os.environ.get("FRAMES") or max(_frame_count(video) - 5, 1))
    camera = RtspCamera({"/demo": video}, loop=True)
    camera.start()
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "fitscore-server"), "serve", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            print(line, end="")
            if "ready" in line:
                break
        else:
            return 1
        print(
            f"camera: {camera.url('/demo')} playing {video.name} in a loop; judging {frames} frames"
        )
        follow = subprocess.run(
            [
                *(str(bin_dir / "fitscore"), "--server", f"127.0.0.1:{port}", "start"),
                *("--camera", "demo", "--source", camera.url("/demo"), "--exercise", exercise),
                *("--frames", str(frames), "--follow"),
            ],
            check=False,
        )
        return follow.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        server.terminate()
        server.wait(30)
        camera.stop()


if __name__ == "__main__":
    sys.exit(main())
