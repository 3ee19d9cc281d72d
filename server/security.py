"""Transport security and caller authentication: optional TLS / mTLS and a bearer token."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.settings import SecuritySettings, SettingsError

logger = logging.getLogger(__name__)

# Health checks stay open so load balancers and orchestrators can probe without the token.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def read_token(settings: SecuritySettings) -> str | None:
    """The bearer token from ``token_file`` (surrounding whitespace removed), or None."""
    if settings.token_file is None:
        return None
    try:
        token = settings.token_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise SettingsError(f"settings: security.token_file: {error}") from None
    if len(token) < 16:
        raise SettingsError("settings: security.token_file: token shorter than 16 characters")
    return token


def server_credentials(settings: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate is configured (mTLS when a client CA is too)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    try:
        key = settings.tls_key_file.read_bytes()
        certificate = settings.tls_cert_file.read_bytes()
        client_ca = (
            settings.tls_client_ca_file.read_bytes()
            if settings.tls_client_ca_file is not None
            else None
        )
    except OSError as error:
        raise SettingsError(f"settings: security: cannot read TLS file: {error}") from None
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method.startswith(OPEN_METHOD_PREFIXES):
            return await continuation(handler_call_details)
        presented = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value.encode() if isinstance(value, str) else value
        if hmac.compare_digest(presented, self._expected):
            return await continuation(handler_call_details)
        logger.warning("refused %s: missing or wrong bearer token", method)
        return _refusal(await continuation(handler_call_details))


def _refusal(handler: grpc.RpcMethodHandler[Any, Any] | None) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        yield  # makes this an async generator, the shape a server-streaming handler has

    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            streaming,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer if handler else None,
        response_serializer=handler.response_serializer if handler else None,
    )
