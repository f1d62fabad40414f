"""Server interceptors: bearer-token auth, and kiln errors -> gRPC status codes with logs.

One mapping for every server: InvalidInput -> INVALID_ARGUMENT (the field is named in the
message and in the `kiln-error-field` trailer), NotFound -> NOT_FOUND, Unavailable ->
UNAVAILABLE, ...; anything else is INTERNAL with no internals in the message.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from services.common import errors
from services.common.logs import request_id_var

log = logging.getLogger("kiln.rpc")
RETRY_AFTER_MS = 1000  # sent with RESOURCE_EXHAUSTED: when a refused call may try again

AUTH_EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def metadata_safe(text: str, limit: int = 256) -> str:
    """text as a valid ASCII metadata value: a field name may hold a user's map key, so
    control and non-ASCII characters are escaped (\\x00, \\u202e) and the length capped."""
    return text.encode("unicode_escape").decode("ascii")[:limit]


def rebuild_handler(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Any, bool], Any]
) -> grpc.RpcMethodHandler:
    """A handler of the same kind whose behaviour is wrap(behaviour, is_stream_response)."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary, False),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, True),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, False),
            handler.request_deserializer,
            handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap(handler.stream_stream, True), handler.request_deserializer, handler.response_serializer
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every RPC but health and reflection."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        if details.method.startswith(AUTH_EXEMPT_PREFIXES):
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return None
        reason = "missing bearer token" if not given else "invalid bearer token"

        def wrap(behaviour: Any, streaming: bool) -> Any:
            if streaming:

                async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                    yield  # pragma: no cover - abort raises

                return deny_stream

            async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

            return deny

        return rebuild_handler(handler, wrap)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Sets the request id for logs, logs each RPC, and maps exceptions to status codes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        metadata = dict(details.invocation_metadata or ())
        request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex[:16])

        async def fail(context: grpc.aio.ServicerContext, exc: Exception) -> None:
            if isinstance(exc, NotImplementedError):  # the generated base servicer's default
                await context.abort(
                    grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented in this build"
                )
            if isinstance(exc, errors.KilnError):
                code = grpc.StatusCode[exc.code]
                if isinstance(exc, errors.InvalidInput):
                    context.set_trailing_metadata((("kiln-error-field", metadata_safe(exc.field)),))
                if isinstance(exc, errors.ResourceExhausted):  # the client's back-off hint
                    context.set_trailing_metadata((("kiln-retry-after-ms", str(RETRY_AFTER_MS)),))
                log.info("rpc %s -> %s: %s", method, code.name, exc)
                await context.abort(code, str(exc))
            log.exception("rpc %s -> INTERNAL", method)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
            )

        def wrap(behaviour: Any, streaming: bool) -> Any:
            if streaming:

                async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    # Set, never reset: a stream the client closes early is finalized in
                    # another context, where reset() raises; each RPC runs in its own task,
                    # whose context ends with it.
                    request_id_var.set(request_id)
                    try:
                        async for item in behaviour(request, context):
                            yield item
                    except grpc.aio.AbortError:
                        raise
                    except Exception as exc:
                        await fail(context, exc)

                return stream

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = request_id_var.set(request_id)
                start = time.perf_counter()
                try:
                    response = behaviour(request, context)
                    if inspect.isawaitable(response):
                        response = await response
                    log.debug("rpc %s ok in %.1f ms", method, 1e3 * (time.perf_counter() - start))
                    return response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await fail(context, exc)
                finally:
                    request_id_var.reset(token)

            return unary

        return rebuild_handler(handler, wrap)
