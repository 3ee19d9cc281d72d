"""Prometheus metrics of one server (its own registry, so tests can run several servers)."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

RECENT_LATENCY_SAMPLES = 200_000
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The counters an operator watches: frames, inference, latency, assessments, cameras."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        camera = ["camera_id"]
        self.frames_received = Counter(
            "fitscore_frames_received",
            "Frames received during assessments",
            camera,
            registry=self.registry,
        )
        self.frames_judged = Counter(
            "fitscore_frames_judged",
            "Frames the pose engine judged",
            camera,
            registry=self.registry,
        )
        self.frames_skipped = Counter(
            "fitscore_frames_skipped",
            "Frames skipped because inference fell behind",
            camera,
            registry=self.registry,
        )
        self.camera_reconnects = Counter(
            "fitscore_camera_reconnects", "Camera reconnections", camera, registry=self.registry
        )
        self.inference_seconds = Histogram(
            "fitscore_inference_seconds",
            "Pose engine time per batch",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "fitscore_batch_size",
            "Frames per inference batch",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
            registry=self.registry,
        )
        self.frame_to_event_seconds = Histogram(
            "fitscore_frame_to_event_seconds",
            "From a frame's hand-over by its camera to its judgement on the event loop",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.active_assessments = Gauge(
            "fitscore_active_assessments", "Assessments not yet finished", registry=self.registry
        )
        self.recent_frame_latencies_s: deque[float] = deque(maxlen=RECENT_LATENCY_SAMPLES)
        """The newest raw latencies, for percentiles in `fitscore-server bench`."""
        self.assessments_finished = Counter(
            "fitscore_assessments_finished",
            "Finished assessments by end reason",
            ["end_reason"],
            registry=self.registry,
        )

    def observe_frame_latency(self, seconds: float) -> None:
        """One frame judged: hand-over by its camera → judgement on the event loop."""
        self.frame_to_event_seconds.observe(seconds)
        self.recent_frame_latencies_s.append(seconds)

    def observe_batch(self, size: int, inference_ms: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(inference_ms / 1000.0)

    def serve_http(self, listen: str) -> Any:
        """Start the /metrics endpoint on HOST:PORT; returns the HTTP server (shut it down)."""
        host, _, port = listen.rpartition(":")
        http_server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        logger.info("metrics on http://%s/metrics", listen)
        return http_server
