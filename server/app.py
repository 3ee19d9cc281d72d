"""Building the gRPC server: AssessmentService, health, reflection, security, metrics, on one port.

``create_server(settings)`` builds, binds and starts without serving forever, so tests start the
real server on port 0; ``serve`` (in ``server.__main__``) adds signals and the wait. Health answers
NOT_SERVING until the pose engine is loaded and warm, then SERVING.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from engines import PoseEngine, load_engine
from server.metrics import Metrics
from server.scoring import load_rules
from server.security import BearerTokenInterceptor, read_token, server_credentials
from server.service import AssessmentService
from server.sessions import EngineFactory, SessionManager
from server.settings import Settings

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AssessmentService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def engine_factory_for(settings: Settings) -> EngineFactory:
    """Loads the configured pose engine (called on a worker thread at start-up)."""
    engine = settings.engine

    def build() -> PoseEngine:
        return load_engine(
            engine.runtime,
            engine.model_dir,
            max_batch=engine.max_batch,
            threads=engine.threads or None,
        )

    return build


@dataclass
class FitscoreServer:
    """A bound, started gRPC server and what it serves."""

    server: grpc.aio.Server
    port: int
    sessions: SessionManager
    health: health.aio.HealthServicer
    metrics: Metrics
    warm_up: asyncio.Task[None]
    metrics_http: Any = field(default=None)

    async def wait_ready(self) -> None:
        """Wait until the engine is warm (raises what loading it raised)."""
        await asyncio.shield(self.warm_up)

    async def stop(self, grace_s: float) -> None:
        """Stop accepting calls, end every assessment (SHUTDOWN), finalise, close streams."""
        await self.health.enter_graceful_shutdown()
        if not self.warm_up.done():
            self.warm_up.cancel()
        await self.sessions.shutdown(grace_s)
        await self.server.stop(grace_s)
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()


async def create_server(
    settings: Settings, *, engine_factory: EngineFactory | None = None
) -> FitscoreServer:
    """Build, bind and start the server described by ``settings``; returns it with its port.

    The pose engine loads in the background; health says NOT_SERVING (and StartAssessment
    answers UNAVAILABLE) until it is warm.
    """
    rules = load_rules(settings.rules_file)
    token = read_token(settings.security)
    credentials = server_credentials(settings.security)
    metrics = Metrics()

    options = [
        ("grpc.max_receive_message_length", settings.limits.max_message_bytes),
        ("grpc.max_send_message_length", settings.limits.max_message_bytes),
        # Accept the clients' keepalive pings (every 20 s at most) even on an idle stream.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ]
    interceptors = [BearerTokenInterceptor(token)] if token is not None else []
    server = grpc.aio.server(options=options, interceptors=interceptors)
    sessions = SessionManager(
        settings, rules, engine_factory or engine_factory_for(settings), metrics
    )
    pb_grpc.add_AssessmentServiceServicer_to_server(AssessmentService(settings, sessions), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if credentials is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, credentials)
    await server.start()
    await health_servicer.set(SERVICE_NAME, NOT_SERVING)
    await health_servicer.set("", NOT_SERVING)

    async def warm_up() -> None:
        await sessions.warm_up()
        await health_servicer.set(SERVICE_NAME, SERVING)
        await health_servicer.set("", SERVING)

    metrics_http = metrics.serve_http(settings.metrics_listen) if settings.metrics_listen else None
    logger.info("fitscore listening on %s (port %d)", settings.listen, port)
    return FitscoreServer(
        server=server,
        port=port,
        sessions=sessions,
        health=health_servicer,
        metrics=metrics,
        warm_up=asyncio.create_task(warm_up()),
        metrics_http=metrics_http,
    )
