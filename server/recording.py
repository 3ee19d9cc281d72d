"""Evidence video: a camera's packets copied into a fragmented MP4 without re-encoding.

A :class:`Recorder` attaches to a :class:`server.cameras.Camera` as its packet sink and writes,
on the camera thread, from the keyframe at or before the moment it attached. The file is
``<output>.part`` until :meth:`Recorder.finish` renames it; it is a fragmented MP4 flushed at
every packet, so a crash loses at most the fragment being written (about one second).

Each connection of the camera is one segment. After a reconnect the recorder starts a new
segment file ``<output>.seg<n>.<offset_ms>ms.part`` (the offset of its first packet from the
start of the recording, on the camera clock) and :meth:`Recorder.finish` joins the segments by
stream copy into the one path asked for, keeping the outage as a gap in the timeline. Codecs an
MP4 cannot carry are transcoded to H.264 (libx264).

Timestamps: the camera already restamps packets onto one increasing clock; a repeated or
backwards DTS is still bumped here, and a packet the muxer rejects anyway is dropped and counted.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
from av.video.stream import VideoStream

from server.cameras import Camera

_logger = logging.getLogger(__name__)

_MOVFLAGS = "+frag_keyframe+empty_moov+default_base_moof"
_SEGMENT_NAME = re.compile(r"^(?P<final>.+?)(?:\.seg(?P<index>\d+)\.(?P<offset_ms>\d+)ms)?\.part$")
_CONCAT_SUFFIX = ".concat.part"


class RecordingError(Exception):
    """A recording could not be started, written or finished."""


class InsufficientSpace(RecordingError):
    """Not enough free disk space for the expected recording."""


@dataclass(frozen=True)
class RecordingOptions:
    fragment_duration_s: float = 1.0
    """A fragment ends at each keyframe and at least this often: the most a crash can lose."""
    assumed_bitrate_bps: float = 4_000_000
    """For the space check while the camera has not measured its own bitrate yet."""
    space_margin_bytes: int = 64 * 1024 * 1024
    transcode_preset: str = "veryfast"
    transcode_crf: int = 23


@dataclass(frozen=True)
class RecordingResult:
    path: Path
    frames_written: int
    duration_s: float
    segments: int
    bytes: int
    start_time_s: float
    """Camera time (``CameraFrame.time_s`` clock) of the first recorded frame: media offset 0."""


@dataclass(frozen=True)
class RecoveredRecording:
    path: Path | None
    """The finalised file, or None when nothing readable was left (the parts are removed)."""
    parts: tuple[Path, ...]
    frames: int


def segment_path(final: Path, index: int, offset_s: float) -> Path:
    if index == 0:
        return final.with_name(final.name + ".part")
    return final.with_name(f"{final.name}.seg{index}.{max(0, round(offset_s * 1000))}ms.part")


class _Writer:
    """One output MP4; stream copy, or libx264 when the container cannot hold the codec."""

    def __init__(self, path: Path, template: VideoStream, options: RecordingOptions) -> None:
        self.path = path
        self.frames = 0
        self.dropped = 0
        self.end_s = 0.0
        self._last_dts: int | None = None
        self._container = av.open(
            str(path),
            "w",
            format="mp4",
            options={
                "movflags": _MOVFLAGS,
                "flush_packets": "1",
                "frag_duration": str(round(options.fragment_duration_s * 1_000_000)),
            },
        )
        self.transcoding = template.codec_context.name not in self._container.supported_codecs
        self._decoder: Any = None
        if self.transcoding:
            rate = template.average_rate or template.guessed_rate or Fraction(25)
            encoder = self._container.add_stream(
                "libx264",
                rate=rate,
                options={"preset": options.transcode_preset, "crf": str(options.transcode_crf)},
            )
            encoder.width = template.codec_context.width
            encoder.height = template.codec_context.height
            encoder.pix_fmt = "yuv420p"
            encoder.codec_context.time_base = template.time_base or Fraction(1, 90_000)
            self._stream: Any = encoder
            self.set_source(template)
        else:
            self._stream = self._container.add_stream_from_template(template)

    def set_source(self, stream: VideoStream) -> None:
        """Packets that follow come from ``stream`` (a new decoder when transcoding)."""
        if self.transcoding:
            source = stream.codec_context
            decoder: Any = av.CodecContext.create(source.name, "r")
            decoder.width, decoder.height = source.width, source.height
            decoder.pix_fmt = source.pix_fmt
            decoder.extradata = source.extradata
            self._decoder = decoder

    def write(self, packet: av.Packet[Any]) -> None:
        """Mux one packet whose timestamps are relative to the file start (in its time_base)."""
        dts, pts = packet.dts, packet.pts
        if dts is None or pts is None or packet.time_base is None:
            self.dropped += 1
            return
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1  # repeated or backwards DTS: bump
            pts = max(pts, dts)
        packet.dts, packet.pts = dts, pts
        if self.transcoding:
            for frame in self._decoder.decode(packet):
                frame = frame.reformat(format="yuv420p")
                frame.pts, frame.time_base = pts, packet.time_base
                self._mux(self._stream.encode(frame))
        else:
            packet.stream = self._stream
            self._mux([packet])
        self._last_dts = dts
        duration = packet.duration or 0
        self.end_s = max(self.end_s, float((pts + duration) * packet.time_base))

    def _mux(self, packets: list[av.Packet[Any]]) -> None:
        for packet in packets:
            try:
                self._container.mux(packet)
            except av.ArgumentError:  # e.g. a DTS the muxer's time base cannot tell apart
                self.dropped += 1
            else:
                self.frames += 1

    def close(self) -> None:
        try:
            if self.transcoding:
                self._mux(self._stream.encode(None))
        finally:
            self._container.close()


def _is_disk_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class Recorder:
    """Records one camera into one MP4 (see the module docstring). Thread-safe.

    ``on_failure`` is called once, on the camera thread, when writing fails (e.g. the disk is
    full); it must not block nor call :meth:`finish` or :meth:`abort` there: hand it over to
    another thread or the event loop. :meth:`finish` then raises the same error.
    """

    def __init__(
        self,
        path: Path | str,
        options: RecordingOptions | None = None,
        *,
        expected_duration_s: float | None = None,
        on_failure: Callable[[RecordingError], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._options = options or RecordingOptions()
        self._expected_duration_s = expected_duration_s
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._camera: Camera | None = None
        self._source: VideoStream | None = None
        self._writer: _Writer | None = None
        self._parts: list[_Writer] = []
        self._offsets_s: list[float] = []
        self._start_ticks: tuple[int, Fraction] | None = None
        self._segment_base = 0
        self._failure: RecordingError | None = None
        self._done = False

    @property
    def failure(self) -> RecordingError | None:
        return self._failure

    @property
    def start_time_s(self) -> float | None:
        """Camera time of the first recorded frame; None until a keyframe has been written."""
        start = self._start_ticks
        return None if start is None else float(start[0] * start[1])

    @property
    def frames_written(self) -> int:
        return sum(writer.frames for writer in self._parts)

    def attach(self, camera: Camera) -> None:
        """Check space, then record ``camera`` from the keyframe at or before now."""
        if self.path.exists() or segment_path(self.path, 0, 0).exists():
            raise RecordingError(f"{self.path} already exists")
        if not self.path.parent.is_dir():
            raise RecordingError(f"{self.path.parent} is not a directory")
        bitrate_bps = camera.counters.bitrate_bps or self._options.assumed_bitrate_bps
        needed = self._options.space_margin_bytes + round(
            bitrate_bps / 8 * (self._expected_duration_s or 0.0) * 1.25
        )
        free = shutil.disk_usage(self.path.parent).free
        if free < needed:
            raise InsufficientSpace(
                f"{self.path.parent} has {free / 1e6:.0f} MB free, the recording needs "
                f"about {needed / 1e6:.0f} MB"
            )
        self._camera = camera
        camera.attach(self)

    # --- PacketSink: called on the camera thread --------------------------------------------

    def open_segment(self, stream: VideoStream) -> None:
        with self._lock:
            self._close_writer()
            self._source = stream

    def write_packet(self, packet: av.Packet[Any]) -> None:
        with self._lock:
            if self._done or self._failure is not None or self._source is None:
                return
            try:
                self._write(packet, self._source)
            except (av.FFmpegError, OSError) as error:
                reason = "disk full" if _is_disk_error(error) else "write failed"
                self._fail(RecordingError(f"{self.path}: {reason} ({error})"))

    def close_segment(self) -> None:
        with self._lock:
            self._close_writer()
            self._source = None

    def _write(self, packet: av.Packet[Any], source: VideoStream) -> None:
        time_base = packet.time_base
        if packet.dts is None or time_base is None:
            return
        if self._writer is None:
            if not packet.is_keyframe:
                return  # a segment starts on a keyframe
            if self._start_ticks is None:
                self._start_ticks = (packet.dts, time_base)
            offset_s = float(packet.dts * time_base) - (self.start_time_s or 0.0)
            path = segment_path(self.path, len(self._parts), offset_s)
            self._writer = _Writer(path, source, self._options)
            self._parts.append(self._writer)
            self._offsets_s.append(offset_s)
            self._segment_base = packet.dts
        packet.dts -= self._segment_base
        if packet.pts is not None:
            packet.pts -= self._segment_base
        self._writer.write(packet)

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except (av.FFmpegError, OSError) as error:
                self._fail(RecordingError(f"{self.path}: closing a segment failed ({error})"))

    def _fail(self, failure: RecordingError) -> None:
        if self._failure is not None:
            return
        self._failure = failure
        _logger.error("recording %s failed: %s", self.path, failure)
        if self._on_failure is not None:
            try:
                self._on_failure(failure)
            except Exception:
                _logger.exception("recording %s: failure callback raised", self.path)

    # --- owner ---------------------------------------------------------------------------------

    def _stop(self) -> None:
        if self._camera is not None:
            self._camera.detach(self)  # no packet arrives after this
        with self._lock:
            self._done = True
            self._close_writer()

    def finish(self) -> RecordingResult:
        """Stop, join the segments and rename to the final path. Raises :class:`RecordingError`
        if the recording failed (its parts stay on disk for :func:`recover_leftovers`)."""
        self._stop()
        if self._failure is not None:
            raise self._failure
        parts = [
            (writer.path, offset)
            for writer, offset in zip(self._parts, self._offsets_s, strict=True)
        ]
        if not parts or self.frames_written == 0:
            for path, _ in parts:
                path.unlink(missing_ok=True)
            raise RecordingError(f"{self.path}: no frames were recorded")
        try:
            if len(parts) == 1:
                os.replace(parts[0][0], self.path)
                frames, end_s = self._parts[0].frames, self._parts[0].end_s
            else:
                frames, end_s = _join(parts, self.path, self._options)
                for path, _ in parts:
                    path.unlink()
        except (av.FFmpegError, OSError) as error:
            raise RecordingError(f"{self.path}: finishing failed ({error})") from error
        return RecordingResult(
            path=self.path,
            frames_written=frames,
            duration_s=end_s,
            segments=len(parts),
            bytes=self.path.stat().st_size,
            start_time_s=self.start_time_s or 0.0,
        )

    def abort(self, reason: str) -> None:
        """Stop and delete what was written (the recording is not wanted)."""
        self._stop()
        _logger.info("recording %s aborted: %s", self.path, reason)
        for writer in self._parts:
            writer.path.unlink(missing_ok=True)


def _packets(path: Path) -> Iterator[tuple[VideoStream, av.Packet[Any]]]:
    """The video packets of a (possibly truncated) file, up to its first unreadable byte."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size:
                    yield stream, packet
        except av.FFmpegError as error:
            _logger.warning("%s: read stopped at a damaged part (%s)", path, error)


def _join(
    parts: list[tuple[Path, float]], output: Path, options: RecordingOptions
) -> tuple[int, float]:
    """Stream-copy segments into ``output`` (via a temporary file); returns (frames, end_s)."""
    temporary = output.with_name(output.name + _CONCAT_SUFFIX)
    writer: _Writer | None = None
    try:
        for path, offset_s in parts:
            source: VideoStream | None = None
            for stream, packet in _packets(path):
                if writer is None:
                    writer = _Writer(temporary, stream, options)
                if stream is not source:
                    writer.set_source(stream)
                    source = stream
                assert packet.time_base is not None
                shift = round(offset_s / packet.time_base)
                packet.dts = (packet.dts if packet.dts is not None else packet.pts or 0) + shift
                packet.pts = (packet.pts if packet.pts is not None else packet.dts) + shift
                writer.write(packet)
        if writer is None:
            return 0, 0.0
        writer.close()
        os.replace(temporary, output)
        return writer.frames, writer.end_s
    finally:
        temporary.unlink(missing_ok=True)


def recover_leftovers(
    video_root: Path, options: RecordingOptions | None = None
) -> list[RecoveredRecording]:
    """Finalise the ``.part`` files a crash left under ``video_root``: join and remux what is
    readable into the final path (``<stem>.recovered<n><suffix>`` if that exists), remove the
    parts. Returns what was done, for logging."""
    options = options or RecordingOptions()
    groups: dict[Path, list[tuple[int, float, Path]]] = {}
    for part in sorted(video_root.rglob("*.part")):
        if part.name.endswith(_CONCAT_SUFFIX):
            part.unlink(missing_ok=True)  # an interrupted join: the segments are still there
            continue
        match = _SEGMENT_NAME.match(part.name)
        if match is None or not part.is_file():
            continue
        final = part.with_name(match["final"])
        index, offset_ms = int(match["index"] or 0), int(match["offset_ms"] or 0)
        groups.setdefault(final, []).append((index, offset_ms / 1000, part))
    recovered: list[RecoveredRecording] = []
    for final, members in sorted(groups.items()):
        members.sort()
        parts = tuple(path for _, _, path in members)
        target = final
        counter = 0
        while target.exists():
            counter += 1
            target = final.with_name(f"{final.stem}.recovered{counter}{final.suffix}")
        try:
            frames, _ = _join([(path, offset) for _, offset, path in members], target, options)
        except (av.FFmpegError, OSError) as error:  # e.g. disk full: keep the parts for later
            _logger.warning("leftover %s could not be recovered: %s", final, error)
            recovered.append(RecoveredRecording(None, parts, 0))
            continue
        for path in parts:
            path.unlink(missing_ok=True)
        recovered.append(RecoveredRecording(target if frames else None, parts, frames))
        _logger.info("recovered %s from %d part(s): %d frames", target, len(parts), frames)
    return recovered
