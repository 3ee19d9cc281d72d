"""The camera registry: configured cameras kept warm, cameras given by URL opened on demand, and
one :class:`CameraLease` (one assessment) per camera at a time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from server.cameras import (
    Camera,
    CameraBusy,
    CameraCounters,
    CameraError,
    CameraOptions,
    CameraState,
    CameraStatus,
    FrameSink,
    StateListener,
    parse_source,
)


class CameraLease:
    """One assessment's use of a camera; release it (or use ``with``) when done."""

    def __init__(self, registry: CameraRegistry, camera: Camera) -> None:
        self.camera = camera
        self._registry = registry
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._registry._release(self)

    def __enter__(self) -> CameraLease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


@dataclass
class _Entry:
    camera: Camera
    configured: bool
    lease: CameraLease | None = None
    on_state: StateListener | None = None
    idle_timer: threading.Timer | None = None


class CameraRegistry:
    """The server's cameras: configured ones opened at start and kept warm, others opened on
    demand and closed ``idle_close_s`` after their last release. One lease per camera."""

    def __init__(
        self,
        configured: dict[str, str] | None = None,
        options: CameraOptions | None = None,
        *,
        idle_close_s: float = 60.0,
        on_state: StateListener | None = None,
    ) -> None:
        self._configured = dict(configured or {})
        for url in self._configured.values():
            parse_source(url)  # reject unsupported sources before anything starts
        self._options = options or CameraOptions()
        self._idle_close_s = idle_close_s
        self._on_state = on_state
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._closed = False

    def start(self) -> None:
        """Open every configured camera (they keep retrying in the background)."""
        for camera_id in self._configured:
            with self._lock:
                self._open(camera_id, self._configured[camera_id], configured=True)

    def statuses(self) -> dict[str, tuple[CameraStatus, CameraCounters]]:
        with self._lock:
            entries = dict(self._entries)
        return {key: (e.camera.status, e.camera.counters) for key, e in entries.items()}

    def acquire(
        self,
        camera_id: str,
        source_url: str | None,
        on_frame: FrameSink,
        *,
        on_state: StateListener | None = None,
        ready_timeout_s: float = 5.0,
    ) -> CameraLease:
        """Lease a camera and start decoding into ``on_frame`` once it streams.

        Raises :class:`CameraBusy` if another lease holds it and :class:`CameraError` if it is
        unknown, configured with another URL, or not streaming within ``ready_timeout_s``.
        """
        with self._lock:
            if self._closed:
                raise CameraError("the camera registry is closed")
            entry = self._entry_for(camera_id, source_url)
            if entry.lease is not None:
                raise CameraBusy(f"camera {camera_id} is used by another assessment")
            if entry.idle_timer is not None:
                entry.idle_timer.cancel()
                entry.idle_timer = None
            lease = CameraLease(self, entry.camera)
            entry.lease, entry.on_state = lease, on_state
        try:
            entry.camera.wait_ready(ready_timeout_s)
        except CameraError:
            lease.release()
            raise
        entry.camera.set_frame_sink(on_frame)
        return lease

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
        for entry in entries:  # lease holders hear CLOSED
            if entry.idle_timer is not None:
                entry.idle_timer.cancel()
            entry.camera.close()
        with self._lock:
            self._entries.clear()

    def _entry_for(self, camera_id: str, source_url: str | None) -> _Entry:
        configured_url = self._configured.get(camera_id)
        if configured_url is not None and source_url and source_url != configured_url:
            raise CameraError(f"camera {camera_id} is configured with another source URL")
        url = configured_url or source_url
        if not url:
            raise CameraError(f"camera {camera_id} is not configured and no source URL was given")
        entry = self._entries.get(camera_id)
        if entry is not None and entry.lease is None:
            final = entry.camera.status.state in (CameraState.FAILED, CameraState.CLOSED)
            if final or entry.camera.source_url != url:
                entry.camera.close(timeout_s=0)
                entry = None
        if entry is None:
            entry = self._open(camera_id, url, configured=configured_url is not None)
        return entry

    def _open(self, camera_id: str, url: str, *, configured: bool) -> _Entry:
        camera = Camera(
            camera_id,
            url,
            self._options,
            on_state=lambda status: self._state_changed(camera_id, status),
            persistent=configured,
        )
        entry = _Entry(camera, configured)
        self._entries[camera_id] = entry
        camera.start()
        return entry

    def _state_changed(self, camera_id: str, status: CameraStatus) -> None:
        with self._lock:
            entry = self._entries.get(camera_id)
            listener = entry.on_state if entry is not None and entry.lease is not None else None
        for callback in (self._on_state, listener):
            if callback is not None:
                callback(status)

    def _release(self, lease: CameraLease) -> None:
        lease.camera.set_frame_sink(None)
        with self._lock:
            entry = self._entries.get(lease.camera.camera_id)
            if entry is None or entry.lease is not lease:
                return
            entry.lease, entry.on_state = None, None
            if not entry.configured and not self._closed:
                entry.idle_timer = threading.Timer(
                    self._idle_close_s, self._close_if_idle, args=(entry,)
                )
                entry.idle_timer.daemon = True
                entry.idle_timer.start()

    def _close_if_idle(self, entry: _Entry) -> None:
        with self._lock:
            if entry.lease is not None or self._entries.get(entry.camera.camera_id) is not entry:
                return
            del self._entries[entry.camera.camera_id]
        entry.camera.close()
