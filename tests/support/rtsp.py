"""Test cameras: a controller for the GStreamer RTSP test server, pytest fixtures, test media.

Load as a pytest plugin (``pytest_plugins = ["tests.support.rtsp"]``). Fixtures:

- ``rtsp_camera``: a factory ``rtsp_camera({"/cam1": path}, loop=False, port=None) -> RtspCamera``
  that starts a server and stops every server it started when the test ends.
- ``make_video``: a factory ``make_video(seconds=4.0, fps=25, name="clip.mp4") -> Path`` writing
  an H.264 test clip (libx264, 320×240, GOP = fps, no B-frames) into the test's ``tmp_path``.

Camera faults are simulated on the server process: :meth:`RtspCamera.pause` (SIGSTOP: the TCP
connection stays open but no data flows), :meth:`RtspCamera.kill`, :meth:`RtspCamera.restart`
(same port), :meth:`RtspCamera.drop_clients` (connections closed, server stays up).
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
REQUIRED_APT_PACKAGES = (
    "python3-gi",
    "gir1.2-gst-rtsp-server-1.0",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
)
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


class RtspServerError(RuntimeError):
    """The test server could not be started."""


@functools.cache
def gst_rtsp_server_problem() -> str | None:
    """Why the system interpreter cannot run the server, or None when it can."""
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import GstRtspServer"
    )
    try:
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{SYSTEM_PYTHON} cannot run: {error}"
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"{SYSTEM_PYTHON} lacks gst-rtsp-server ({last_line}); apt-get install " + " ".join(
            REQUIRED_APT_PACKAGES
        )
    return None


class RtspCamera:
    """One gst-rtsp-server process on 127.0.0.1 serving files as camera mounts."""

    def __init__(
        self, mounts: Mapping[str, Path | str], *, loop: bool = False, log_path: Path | None = None
    ) -> None:
        if not mounts:
            raise ValueError("at least one mount is needed")
        self._mounts = {mount: Path(path).resolve() for mount, path in mounts.items()}
        for mount, path in self._mounts.items():
            if not mount.startswith("/"):
                raise ValueError(f"mount {mount!r} must start with '/'")
            if not path.is_file():
                raise FileNotFoundError(path)
        self._loop = loop
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RtspServerError("the server has not been started")
        return self._port

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def url(self, mount: str) -> str:
        if mount not in self._mounts:
            raise KeyError(f"no mount {mount!r}; have {sorted(self._mounts)}")
        return f"rtsp://127.0.0.1:{self.port}{mount}"

    def start(self, port: int | None = None) -> int:
        """Start the server (port None or 0 = any free port) and return the bound port."""
        if self.running:
            raise RtspServerError(f"already running (pid {self.pid})")
        problem = gst_rtsp_server_problem()
        if problem is not None:
            raise RtspServerError(problem)
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(port or 0)]
        for mount, path in self._mounts.items():
            command += ["--mount", f"{mount}={path}"]
        if self._loop:
            command.append("--loop")
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:  # binding a just-freed port can fail for a moment: retry until the deadline
            bound = self._spawn(command, deadline)
            if bound is not None:
                self._port = bound
                return bound
            if time.monotonic() >= deadline:
                raise RtspServerError(f"server did not start: {command}; see {self._log_path}")
            time.sleep(0.1)

    def _spawn(self, command: list[str], deadline: float) -> int | None:
        with contextlib.ExitStack() as stack:
            log: IO[bytes] | int = subprocess.DEVNULL
            if self._log_path is not None:
                log = stack.enter_context(self._log_path.open("ab"))
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
            )
        assert process.stdout is not None
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0 or not selector.select(remaining_s):
                    break
                chunk = os.read(process.stdout.fileno(), 64)
                if not chunk:
                    break
                line += chunk
        process.stdout.close()
        if line.strip().isdigit():
            self._process = process
            return int(line)
        _terminate(process)
        return None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, no data flows."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def drop_clients(self) -> None:
        """Close every client connection; the server keeps running (SIGUSR1)."""
        self._signal(signal.SIGUSR1)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL); the port is freed."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            self._process.wait(timeout=_STOP_TIMEOUT_S)
            self._process = None

    def restart(self) -> int:
        """Kill the server if it runs and start it again on the same port."""
        port = self.port
        self.kill()
        return self.start(port)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it does not exit). Safe to call twice."""
        if self._process is not None:
            _terminate(self._process)
            self._process = None

    def _signal(self, number: signal.Signals) -> None:
        if not self.running:
            raise RtspServerError("the server is not running")
        assert self._process is not None
        os.kill(self._process.pid, number)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)


def write_test_video(
    path: Path,
    *,
    seconds: float = 4.0,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
) -> Path:
    """Write an H.264 MP4 (GOP = fps, no B-frames) whose frames all differ; returns ``path``."""
    frame_count = round(seconds * fps)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(
            "libx264",
            rate=fps,
            options={
                "preset": "ultrafast",
                "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0",
            },
        )
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = fps
        stream.codec_context.max_b_frames = 0
        rows = np.arange(height, dtype=np.uint16)[:, None]
        columns = np.arange(width, dtype=np.uint16)[None, :]
        for index in range(frame_count):
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[..., 0] = (columns + 4 * index) % 256
            image[..., 1] = (rows + 2 * index) % 256
            image[..., 2] = (index * 255 // max(frame_count - 1, 1)) % 256
            bar = (index * 7) % width  # a moving vertical bar
            image[:, bar : bar + 8] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


RtspCameraFactory = Callable[..., RtspCamera]
VideoFactory = Callable[..., Path]


@pytest.fixture
def rtsp_camera(tmp_path: Path) -> Iterator[RtspCameraFactory]:
    """Start RTSP test servers: ``rtsp_camera({"/cam1": file}, loop=False, port=None)``."""
    problem = gst_rtsp_server_problem()
    if problem is not None:
        pytest.fail(problem)
    started: list[RtspCamera] = []

    def start(
        mounts: Mapping[str, Path | str], *, loop: bool = False, port: int | None = None
    ) -> RtspCamera:
        log_path = tmp_path / f"rtsp_server_{len(started)}.log"
        camera = RtspCamera(mounts, loop=loop, log_path=log_path)
        started.append(camera)
        camera.start(port)
        return camera

    yield start
    for camera in started:
        camera.stop()


@pytest.fixture
def make_video(tmp_path: Path) -> VideoFactory:
    """Write a test clip into tmp_path: ``make_video(seconds=4.0, fps=25, name="clip.mp4")``."""

    def make(seconds: float = 4.0, fps: int = 25, name: str = "clip.mp4") -> Path:
        return write_test_video(tmp_path / name, seconds=seconds, fps=fps)

    return make
