"""Cameras: one reader thread per RTSP camera (or local file), decoding with PyAV.

A :class:`Camera` opens its source, demuxes the video stream, keeps the last two GOPs for
recorders (:class:`PacketSink`) that attach later, decodes only while a frame sink is set (the
decoder is primed from the GOP buffer, so a new sink waits for no keyframe), and hands each frame
out as an :class:`engines.CameraFrame`. It reports its :class:`CameraState` through
``on_state`` and reconnects with backoff and jitter when the stream drops or stalls.

Timestamps: every packet is restamped on the camera's own clock
(:class:`server.camera_clock.CameraClock`) before it is decoded or recorded, so frame times
(``time_s``) and recorded timestamps share one timeline that starts at 0 and increases strictly
across reconnects.

:class:`server.camera_registry.CameraRegistry` keeps cameras warm and leases them to assessments.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import av
import av.container
import numpy as np
from av.video.stream import VideoStream

from engines import CameraFrame
from server.camera_clock import CameraClock

_logger = logging.getLogger(__name__)

LIVE_SCHEMES = frozenset({"rtsp", "rtsps"})
_DEFAULT_FPS = 25.0


class CameraError(Exception):
    """A camera cannot be opened or used."""


class CameraBusy(CameraError):
    """The camera is already used by another assessment."""


class CameraState(enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass(frozen=True)
class CameraStatus:
    camera_id: str
    state: CameraState
    detail: str


@dataclass(frozen=True)
class CameraOptions:
    """Tunables of one camera. Network options follow shared/research/gpu_and_video.md §4."""

    open_timeout_s: float = 4.0
    stall_timeout_s: float = 3.0
    """No packet for this long: the camera is reported STALLED."""
    read_timeout_s: float | None = None
    """PyAV's read timeout; None = stall_timeout_s + 1. Measured (av 18.1, RTSP over TCP): when
    it expires FFmpeg first releases the one packet it holds back, and only the next expiry ends
    the read, so a frozen stream is dropped and reopened after about twice this."""
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    reconnect_jitter: float = 0.25
    """Each backoff delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""
    analyze_duration_us: int = 500_000
    probe_size_bytes: int = 262_144
    decoder_thread_type: str = "AUTO"
    """PyAV thread type: "AUTO" (frame + slice threads, a few frames of latency) or "SLICE"."""
    decoder_threads: int = 0
    """0 = FFmpeg chooses."""
    realtime_files: bool = True
    """Pace local files at their frame rate, as a camera would deliver them."""
    loop_files: bool = False
    """Restart a local file at its end instead of closing the camera."""
    gop_buffer_max_packets: int = 1_000

    def __post_init__(self) -> None:
        for name in ("open_timeout_s", "stall_timeout_s", "reconnect_initial_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.read_timeout_s is not None and self.read_timeout_s <= self.stall_timeout_s:
            raise ValueError("read_timeout_s must exceed stall_timeout_s (or be None)")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        if self.decoder_thread_type not in ("AUTO", "FRAME", "SLICE", "NONE"):
            raise ValueError(f"unknown decoder_thread_type {self.decoder_thread_type!r}")


@dataclass(frozen=True)
class CameraCounters:
    packets_received: int = 0
    bytes_received: int = 0
    frames_decoded: int = 0
    frames_dropped: int = 0
    """Frames the frame sink refused (its inbox was full)."""
    reconnects: int = 0
    open_latency_s: float | None = None
    """Time from starting to open the source to its first packet, last connection."""
    streaming_s: float = 0.0
    """Time spent connected, for a bitrate estimate."""

    @property
    def bitrate_bps(self) -> float | None:
        return self.bytes_received * 8 / self.streaming_s if self.streaming_s > 0.5 else None


FrameSink = Callable[[CameraFrame], bool]
"""Receives each decoded frame on the camera thread; must not block. Returns False if dropped."""
StateListener = Callable[[CameraStatus], None]


class PacketSink(Protocol):
    """Receives the camera's packets on the camera thread (a recorder). Must not block for long."""

    def open_segment(self, stream: VideoStream) -> None:
        """A connection started: packets that follow belong to ``stream`` (open until closed)."""

    def write_packet(self, packet: av.Packet[Any]) -> None:
        """A copy of one packet, restamped on the camera clock (``packet.time_base``)."""

    def close_segment(self) -> None:
        """The connection ended; a later :meth:`open_segment` starts a new one."""


@dataclass(frozen=True)
class _Source:
    location: str
    live: bool


def parse_source(url: str) -> _Source:
    """rtsp/rtsps URLs are live sources; file:// URLs and plain paths are local files."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in LIVE_SCHEMES:
        return _Source(url, live=True)
    if scheme == "file":
        return _Source(parts.path, live=False)
    if scheme == "" and url:
        return _Source(str(Path(url)), live=False)
    raise CameraError(f"unsupported source {url!r}: use rtsp://, rtsps://, file:// or a path")


def copy_packet(packet: av.Packet[Any]) -> av.Packet[Any]:
    """An independent packet with the same data, timestamps and keyframe flag."""
    copied = av.Packet(bytes(packet))
    copied.pts = packet.pts
    copied.dts = packet.dts
    copied.duration = packet.duration
    copied.time_base = packet.time_base
    copied.is_keyframe = packet.is_keyframe
    return copied


class _GopBuffer:
    """The packets since the keyframe before the latest one (two GOPs), for late joiners."""

    def __init__(self, max_packets: int) -> None:
        self._max_packets = max_packets
        self._gops: list[list[av.Packet[Any]]] = []

    def clear(self) -> None:
        self._gops = []

    def add(self, packet: av.Packet[Any]) -> None:
        if packet.is_keyframe:
            self._gops = [*self._gops[-1:], [packet]]
        elif self._gops:
            self._gops[-1].append(packet)
        if sum(len(gop) for gop in self._gops) > self._max_packets:
            self._gops = self._gops[-1:] if len(self._gops[-1]) <= self._max_packets else []

    def since_keyframe_before(self, time_s: float | None) -> list[av.Packet[Any]]:
        """Packets from the latest keyframe at or before ``time_s`` (None: the latest one)."""
        for start in range(len(self._gops) - 1, -1, -1):
            keyframe = self._gops[start][0]
            assert keyframe.pts is not None
            assert keyframe.time_base is not None
            if start == 0 or time_s is None or keyframe.pts * keyframe.time_base <= time_s:
                return [packet for gop in self._gops[start:] for packet in gop]
        return []

    def before_in_last_gop(self, packet: av.Packet[Any]) -> list[av.Packet[Any]]:
        """The packets of the latest GOP before ``packet``, if ``packet`` is its last one."""
        last = self._gops[-1] if self._gops else []
        return last[:-1] if last and last[-1] is packet else []


class Camera:
    """One source read by its own thread. Callbacks run on that thread and must not block."""

    def __init__(
        self,
        camera_id: str,
        source_url: str,
        options: CameraOptions | None = None,
        *,
        on_state: StateListener | None = None,
        persistent: bool = False,
    ) -> None:
        """``persistent``: keep retrying even if the first open fails (configured cameras)."""
        self.camera_id = camera_id
        self.source_url = source_url
        self._source = parse_source(source_url)
        self._options = options or CameraOptions()
        self._on_state = on_state
        self._persistent = persistent
        self._lock = threading.Lock()  # sinks and the GOP buffer
        self._state_changed = threading.Condition()
        self._status = CameraStatus(camera_id, CameraState.CONNECTING, "not started")
        self._stop = threading.Event()
        self._frame_sink: FrameSink | None = None
        self._frame_index = 0
        self._packet_sinks: list[PacketSink] = []
        self._pending_sinks: list[PacketSink] = []
        self._gops = _GopBuffer(self._options.gop_buffer_max_packets)
        self._stream: VideoStream | None = None
        self._clock = CameraClock()
        self._counters = CameraCounters()
        self._connected_at_s: float | None = None
        self._last_packet_s = 0.0
        self._ever_streamed = False
        self._connected_since_open = False
        self._file_restarted = False
        self._decoder_primed = False
        self._discard_before_pts = 0
        self._last_frame_time_s: float | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"camera-{camera_id}", daemon=True),
            threading.Thread(target=self._watch, name=f"camera-{camera_id}-watch", daemon=True),
        ]

    @property
    def _read_timeout_s(self) -> float:
        configured = self._options.read_timeout_s
        return configured if configured is not None else self._options.stall_timeout_s + 1.0

    @property
    def live(self) -> bool:
        return self._source.live

    @property
    def status(self) -> CameraStatus:
        return self._status

    @property
    def counters(self) -> CameraCounters:
        connected_s = 0.0
        if self._connected_at_s is not None:
            connected_s = time.monotonic() - self._connected_at_s
        counters = self._counters
        return replace(counters, streaming_s=counters.streaming_s + connected_s)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop reading. Waits up to ``timeout_s`` for the thread (a read blocks at most ~2x the
        read timeout); sinks get nothing after this returns."""
        self._stop.set()
        with self._lock:
            self._frame_sink = None
            self._pending_sinks.clear()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout_s)
        if self._status.state not in (CameraState.CLOSED, CameraState.FAILED):
            self._set_state(CameraState.CLOSED, "closed")

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the camera streams; raise :class:`CameraError` if it failed or timed out."""
        deadline_s = time.monotonic() + timeout_s
        with self._state_changed:
            while True:
                status = self._status
                if status.state in (CameraState.STREAMING, CameraState.STALLED):
                    return
                if status.state in (CameraState.FAILED, CameraState.CLOSED):
                    raise CameraError(f"camera {self.camera_id}: {status.detail}")
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    raise CameraError(
                        f"camera {self.camera_id} is not streaming after {timeout_s:g} s "
                        f"({status.state.value}: {status.detail})"
                    )
                self._state_changed.wait(remaining_s)

    def set_frame_sink(self, sink: FrameSink | None) -> None:
        """Start (or stop, with None) decoding into ``sink``; frame indexes restart at 0."""
        with self._lock:
            self._frame_sink = sink
            self._frame_index = 0

    def attach(self, sink: PacketSink) -> None:
        """Send packets to ``sink`` from the keyframe at or before now (on the camera thread)."""
        with self._lock:
            self._pending_sinks.append(sink)

    def detach(self, sink: PacketSink) -> None:
        """Stop sending packets to ``sink``; no call reaches it after this returns."""
        with self._lock:
            if sink in self._pending_sinks:
                self._pending_sinks.remove(sink)
            if sink in self._packet_sinks:
                self._packet_sinks.remove(sink)

    # --- camera thread -------------------------------------------------------------------------

    def _set_state(self, state: CameraState, detail: str) -> None:
        with self._state_changed:
            if self._status.state == state and self._status.detail == detail:
                return
            if self._status.state in (CameraState.CLOSED, CameraState.FAILED):
                return  # final
            self._status = CameraStatus(self.camera_id, state, detail)
            self._state_changed.notify_all()
        level = (
            logging.WARNING if state in (CameraState.STALLED, CameraState.FAILED) else logging.INFO
        )
        _logger.log(
            level,
            "camera %s %s: %s",
            self.camera_id,
            state.value,
            detail,
            extra={"camera_id": self.camera_id},
        )
        if self._on_state is not None:
            try:
                self._on_state(self._status)
            except Exception:
                _logger.exception(
                    "camera %s: state listener failed",
                    self.camera_id,
                    extra={"camera_id": self.camera_id},
                )

    def _watch(self) -> None:
        stall_s = self._options.stall_timeout_s
        while not self._stop.wait(min(0.25, stall_s / 4)):
            idle_s = time.monotonic() - self._last_packet_s
            if self._status.state is CameraState.STREAMING and idle_s > stall_s:
                self._set_state(CameraState.STALLED, f"no data for {idle_s:.1f} s")

    def _run(self) -> None:
        try:
            self._reconnect_loop()
        except Exception as error:  # a bug: report it rather than dying silently
            _logger.exception(
                "camera %s: reader crashed", self.camera_id, extra={"camera_id": self.camera_id}
            )
            self._set_state(CameraState.FAILED, f"reader crashed: {error!r}")
        finally:
            self._set_state(CameraState.CLOSED, "closed")

    def _reconnect_loop(self) -> None:
        options = self._options
        delay_s = options.reconnect_initial_s
        self._set_state(CameraState.CONNECTING, f"opening {redact(self.source_url)}")
        while not self._stop.is_set():
            opened_at_s = time.monotonic()
            try:
                container = self._open()
            except (av.FFmpegError, OSError) as error:
                detail = _describe_open_error(
                    self.source_url, error, time.monotonic() - opened_at_s, options.open_timeout_s
                )
                if not (self._ever_streamed or self._persistent):
                    self._set_state(CameraState.FAILED, detail)
                    return
                reason = detail
            else:
                try:
                    reason = self._read(container, opened_at_s)
                except av.ExitError:
                    reason = f"no data for {time.monotonic() - self._last_packet_s:.1f} s"
                except av.FFmpegError as error:
                    reason = f"read failed ({type(error).__name__}: {error})"
                except CameraError as error:
                    if not self._ever_streamed:
                        self._set_state(CameraState.FAILED, str(error))
                        return
                    reason = str(error)
                finally:
                    self._disconnected(container)
                if self._stop.is_set():
                    return
                if reason == _END_OF_FILE and not self.live:
                    if options.loop_files:
                        self._file_restarted = True
                        continue
                    self._set_state(CameraState.CLOSED, "end of file")
                    return
                if self._connected_since_open:
                    delay_s = options.reconnect_initial_s
            jitter = 1 + options.reconnect_jitter * (2 * random.random() - 1)
            wait_s = delay_s * jitter
            self._set_state(CameraState.RECONNECTING, f"{reason}; retrying in {wait_s:.1f} s")
            if self._stop.wait(wait_s):
                return
            delay_s = min(delay_s * 2, options.reconnect_max_s)

    def _open(self) -> av.container.InputContainer:
        options: dict[str, str] = {}
        if self.live:
            options = {
                "rtsp_transport": "tcp",
                "analyzeduration": str(self._options.analyze_duration_us),
                "probesize": str(self._options.probe_size_bytes),
            }
        timeout = (self._options.open_timeout_s, self._read_timeout_s)
        return av.open(self._source.location, "r", options=options, timeout=timeout)

    def _read(self, container: av.container.InputContainer, opened_at_s: float) -> str:
        """Demux and decode until the connection ends; returns why it ended."""
        self._connected_since_open = False
        if not container.streams.video:
            raise CameraError(f"{redact(self.source_url)} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = self._options.decoder_thread_type
        if self._options.decoder_threads:
            stream.thread_count = self._options.decoder_threads
        rate = stream.average_rate or stream.guessed_rate
        interval_s = 1 / float(rate) if rate else 1 / _DEFAULT_FPS
        assert stream.time_base is not None
        time_base = float(stream.time_base)
        self._clock.new_connection()
        self._decoder_primed = False
        with self._lock:
            self._stream = stream
            self._gops.clear()
            self._call_sinks(self._packet_sinks, lambda sink: sink.open_segment(stream))
        pace = not self.live and self._options.realtime_files
        pace_origin: tuple[float, float] | None = None
        packets_since_stall = 0
        for packet in container.demux(stream):
            if self._stop.is_set():
                return "closed"
            if packet.size == 0:
                self._decode(None, stream, interval_s)
                return _END_OF_FILE if not self.live else "the stream ended (EOF)"
            now_s = time.monotonic()
            self._last_packet_s = now_s
            if not self._connected_since_open:
                self._connected(stream, now_s - opened_at_s, now_s)
            elif self._status.state is not CameraState.STALLED:
                packets_since_stall = 0
            elif (packets_since_stall := packets_since_stall + 1) >= 2:
                # Not on the first packet: FFmpeg releases one held-back packet on a read timeout.
                self._set_state(CameraState.STREAMING, "data flows again")
            self._counters = replace(
                self._counters,
                packets_received=self._counters.packets_received + 1,
                bytes_received=self._counters.bytes_received + packet.size,
            )
            dts_s = self._clock.restamp(packet, time_base, interval_s, stream.start_time)
            self._distribute(packet, stream)
            if pace:
                pace_origin = pace_origin or (now_s, dts_s)
                due_s = pace_origin[0] + dts_s - pace_origin[1]
                if due_s > now_s and self._stop.wait(due_s - now_s):
                    return "closed"
            self._decode(packet, stream, interval_s)
        return _END_OF_FILE if not self.live else "the stream ended"

    def _connected(self, stream: VideoStream, latency_s: float, now_s: float) -> None:
        self._connected_since_open = True
        self._connected_at_s = now_s
        if self._file_restarted:  # a looping file started again: not a reconnect
            self._file_restarted = False
            return
        self._counters = replace(
            self._counters,
            open_latency_s=latency_s,
            reconnects=self._counters.reconnects + (1 if self._ever_streamed else 0),
        )
        self._ever_streamed = True
        codec = stream.codec_context
        self._set_state(
            CameraState.STREAMING,
            f"{codec.name} {codec.width}x{codec.height}, opened in {latency_s:.2f} s",
        )

    def _disconnected(self, container: av.container.InputContainer) -> None:
        try:
            container.close()
        except av.FFmpegError:
            _logger.debug("camera %s: close failed", self.camera_id, exc_info=True)
        if self._connected_at_s is not None:
            streamed_s = time.monotonic() - self._connected_at_s
            self._connected_at_s = None
            self._counters = replace(
                self._counters, streaming_s=self._counters.streaming_s + streamed_s
            )
        with self._lock:
            self._stream = None
            self._gops.clear()
            self._call_sinks(self._packet_sinks, lambda sink: sink.close_segment())

    def _distribute(self, packet: av.Packet[Any], stream: VideoStream) -> None:
        """Keep the packet in the GOP buffer and copy it to every packet sink."""
        with self._lock:
            if self._pending_sinks:
                new_sinks, self._pending_sinks = self._pending_sinks, []
                # From the keyframe at or before the last frame handed out (the decoder lags
                # the demuxer by a few frames), so the recording covers every frame after now.
                since_s = self._last_frame_time_s if self._frame_sink is not None else None
                backlog = self._gops.since_keyframe_before(since_s)

                def start(sink: PacketSink) -> None:
                    sink.open_segment(stream)
                    for old in backlog:
                        sink.write_packet(copy_packet(old))

                self._packet_sinks += self._call_sinks(new_sinks, start)
            self._gops.add(packet)
            self._call_sinks(
                self._packet_sinks, lambda sink: sink.write_packet(copy_packet(packet))
            )

    def _call_sinks(
        self, sinks: list[PacketSink], call: Callable[[PacketSink], None]
    ) -> list[PacketSink]:
        """Call each sink; a sink that raises is dropped (and logged). Returns the survivors."""
        for sink in list(sinks):
            try:
                call(sink)
            except Exception:
                _logger.exception(
                    "camera %s: packet sink %r failed and was detached",
                    self.camera_id,
                    sink,
                    extra={"camera_id": self.camera_id},
                )
                if sink in sinks:
                    sinks.remove(sink)
        return sinks

    def _decode(
        self, packet: av.Packet[Any] | None, stream: VideoStream, interval_s: float
    ) -> None:
        sink = self._frame_sink
        if sink is None:
            self._decoder_primed = False
            return
        if packet is not None and not self._decoder_primed:
            with self._lock:  # replay this GOP's earlier packets, discarding their frames
                backlog = self._gops.before_in_last_gop(packet)
            if not backlog and not packet.is_keyframe:
                return  # no reference frame yet: wait for a keyframe
            self._discard_before_pts = packet.pts or 0
            self._decoder_primed = True
            for old in backlog:
                self._decode_packet(old, stream, sink, interval_s)
        self._decode_packet(packet, stream, sink, interval_s)

    def _decode_packet(
        self, packet: av.Packet[Any] | None, stream: VideoStream, sink: FrameSink, interval_s: float
    ) -> None:
        try:
            frames = stream.decode(packet)
        except av.FFmpegError as error:
            _logger.debug(
                "camera %s: undecodable packet: %s",
                self.camera_id,
                error,
                extra={"camera_id": self.camera_id},
            )
            return
        assert stream.time_base is not None
        time_base = float(stream.time_base)
        for frame in frames:
            if frame.pts is not None and frame.pts < self._discard_before_pts:
                continue
            # Frames flushed at the end have no time_base of their own: use the stream's.
            time_s = None if frame.pts is None else frame.pts * time_base
            last_s = self._last_frame_time_s
            if time_s is None or (last_s is not None and time_s <= last_s):
                time_s = (last_s if last_s is not None else -interval_s) + interval_s
            self._last_frame_time_s = time_s
            image = np.ascontiguousarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            with self._lock:
                if self._frame_sink is not sink:
                    return
                index = self._frame_index
                self._frame_index += 1
            accepted = True
            try:
                accepted = sink(CameraFrame(self.camera_id, index, time_s, image))
            except Exception:
                _logger.exception(
                    "camera %s: frame sink failed",
                    self.camera_id,
                    extra={"camera_id": self.camera_id},
                )
                accepted = False
            self._counters = replace(
                self._counters,
                frames_decoded=self._counters.frames_decoded + 1,
                frames_dropped=self._counters.frames_dropped + (0 if accepted else 1),
            )


_END_OF_FILE = "end of file"


def redact(url: str) -> str:
    """The URL without its password, for logs and error details."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _describe_open_error(url: str, error: Exception, elapsed_s: float, timeout_s: float) -> str:
    if isinstance(error, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(error, FileNotFoundError):
        reason = "no such file"
    elif isinstance(error, av.error.HTTPNotFoundError):
        reason = "the server has no such stream (404 Not Found)"
    elif elapsed_s >= 0.9 * timeout_s:
        reason = f"no answer within {timeout_s:g} s"
    else:
        reason = f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}"
    return f"cannot open {redact(url)}: {reason}"
