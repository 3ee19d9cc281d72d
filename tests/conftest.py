"""Shared fixtures. The RTSP camera fixtures live in tests/support/rtsp.py."""

from __future__ import annotations

pytest_plugins = ["tests.support.rtsp"]
