"""The camera clock: one strictly increasing timeline for a camera across its connections.

Every packet is restamped on its camera's clock before it is decoded or recorded, so frame times
(``time_s``) and recorded timestamps share one timeline that starts at 0 and increases strictly
across reconnects (a reconnect adds the wall-clock gap of the outage). Measured with av 18.1: the
first keyframe of an RTSP session arrives without timestamps, and a looping source repeats one
timestamp at each seam; both are repaired here.
"""

from __future__ import annotations

import time
from typing import Any

import av


class CameraClock:
    """Maps each connection's timestamps onto one camera timeline that strictly increases."""

    def __init__(self) -> None:
        self._last_dts_s: float | None = None
        self._last_wall_s = 0.0
        self._source_base_ticks: int | None = None
        self._camera_base_s = 0.0
        self._last_source_dts: int | None = None
        self._last_dts_ticks: int | None = None

    def new_connection(self) -> None:
        self._source_base_ticks = None
        self._last_source_dts = None
        self._last_dts_ticks = None

    def restamp(
        self, packet: av.Packet[Any], time_base: float, interval_s: float, start_ticks: int | None
    ) -> float:
        """Rewrite pts/dts in place onto the camera timeline; returns the new dts in seconds."""
        interval_ticks = max(1, round(interval_s / time_base))
        if packet.dts is None or packet.pts is None:
            known = packet.pts if packet.pts is not None else packet.dts
            if known is None:  # e.g. the first keyframe of an RTSP session: one frame before start
                if self._last_source_dts is not None:
                    known = self._last_source_dts + interval_ticks
                else:
                    known = (
                        start_ticks if start_ticks is not None else interval_ticks
                    ) - interval_ticks
            packet.pts = packet.pts if packet.pts is not None else known
            packet.dts = packet.dts if packet.dts is not None else min(known, packet.pts)
        source_dts, source_pts = packet.dts, packet.pts
        assert source_dts is not None
        assert source_pts is not None
        now_s = time.monotonic()
        if self._source_base_ticks is None:  # first packet of a connection: anchor it
            if self._last_dts_s is not None:
                gap_s = max(interval_s, now_s - self._last_wall_s)
                self._camera_base_s = self._last_dts_s + gap_s
            self._source_base_ticks = source_dts
        dts_ticks = round(
            (self._camera_base_s + (source_dts - self._source_base_ticks) * time_base) / time_base
        )
        if self._last_dts_ticks is not None and dts_ticks <= self._last_dts_ticks:
            dts_ticks = self._last_dts_ticks + interval_ticks  # repeated or backwards: re-anchor
            self._camera_base_s = dts_ticks * time_base
            self._source_base_ticks = source_dts
        packet.dts = dts_ticks
        packet.pts = dts_ticks + (source_pts - source_dts)
        self._last_source_dts = source_dts
        self._last_dts_ticks = dts_ticks
        self._last_dts_s = dts_ticks * time_base
        self._last_wall_s = now_s
        return self._last_dts_s
