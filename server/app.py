"""Building the gRPC server: AssessmentService, health, reflection, interceptors, on one port.

``create_server(settings)`` builds and binds without serving forever, so tests start the real
server on port 0; ``serve`` (in ``server.__main__``) adds signals and the wait.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client import assessment_pb2 as pb
from client import assessment_pb2_grpc as pb_grpc
from server.service import AssessmentService
from server.sessions import SessionManager
from server.settings import Settings

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AssessmentService"].full_name


@dataclass
class FitscoreServer:
    """A bound, started gRPC server and what it serves."""

    server: grpc.aio.Server
    port: int
    sessions: SessionManager
    health: health.aio.HealthServicer

    async def stop(self, grace_s: float) -> None:
        """Stop accepting calls, finish every assessment, close streams, then stop."""
        await self.health.enter_graceful_shutdown()
        await self.sessions.shutdown()
        await self.server.stop(grace_s)


async def create_server(settings: Settings) -> FitscoreServer:
    """Build, bind and start the server described by ``settings``; returns it with its port."""
    options = [
        ("grpc.max_receive_message_length", settings.limits.max_message_bytes),
        ("grpc.max_send_message_length", settings.limits.max_message_bytes),
    ]
    server = grpc.aio.server(options=options)
    sessions = SessionManager(settings)
    pb_grpc.add_AssessmentServiceServicer_to_server(AssessmentService(settings, sessions), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise OSError(f"could not listen on {settings.listen}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    await health_servicer.set(SERVICE_NAME, serving)
    await health_servicer.set("", serving)
    logger.info("fitscore listening on %s (port %d)", settings.listen, port)
    return FitscoreServer(server=server, port=port, sessions=sessions, health=health_servicer)
