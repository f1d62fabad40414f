"""Typed gRPC clients: deadlines on unary calls, keepalive, retry on UNAVAILABLE, bearer token,
TLS.

with connect("judge") as client:
    response = client.stub.Judge(request)
    job = client.jobs.GetJob(common_pb2.GetJobRequest(job_id=...))
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from kiln.common.v1 import common_pb2_grpc
from services.common import errors
from services.common.settings import SERVICES, Settings, get_settings

STUBS: dict[str, tuple[str, str]] = {
    "inference": ("kiln.inference.v1.inference_pb2_grpc", "InferenceStub"),
    "judge": ("kiln.judge.v1.judge_pb2_grpc", "JudgeStub"),
    "toolsynth": ("kiln.toolsynth.v1.toolsynth_pb2_grpc", "ToolSynthStub"),
    "trainer": ("kiln.trainer.v1.trainer_pb2_grpc", "TrainerStub"),
    "prober": ("kiln.prober.v1.prober_pb2_grpc", "ProberStub"),
}
SERVICE_NAMES = {
    "inference": "kiln.inference.v1.Inference",
    "judge": "kiln.judge.v1.Judge",
    "toolsynth": "kiln.toolsynth.v1.ToolSynth",
    "trainer": "kiln.trainer.v1.Trainer",
    "prober": "kiln.prober.v1.Prober",
}


# A dead peer under a long stream is noticed by HTTP/2 keepalive pings instead of a deadline.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000


def service_config(attempts: int = 4) -> str:
    """gRPC service config: transparent retry on UNAVAILABLE. No timeout: a config timeout
    caps every call whatever deadline its caller sets, streams included (see _CallDefaults)."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


class _CallDefaults(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """A default deadline for unary calls that set none (server-streaming calls such as
    Generate and WatchJob live as long as the work they follow; keepalive notices a dead
    peer), and `authorization: Bearer <token>` when a token is set (insecure channels too)."""

    def __init__(self, token: str, deadline_s: float) -> None:
        self._headers = list(call_metadata(token))
        self._deadline_s = deadline_s

    def _details(self, details: grpc.ClientCallDetails, unary: bool) -> grpc.ClientCallDetails:
        timeout = details.timeout
        if timeout is None and unary:
            timeout = self._deadline_s
        return _CallDetails(
            details.method,
            timeout,
            [*(details.metadata or ()), *self._headers],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._details(details, True), request)

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._details(details, False), request)

    def intercept_stream_unary(self, continuation: Callable, details: Any, requests: Any) -> Any:
        return continuation(self._details(details, True), requests)

    def intercept_stream_stream(self, continuation: Callable, details: Any, requests: Any) -> Any:
        return continuation(self._details(details, False), requests)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


def _channel_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config()),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.http2.max_pings_without_data", 0),  # a quiet WatchJob still pings
    ]


def _channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS (mTLS with a client certificate) when KILN_TLS_CA is set, else None (insecure)."""
    if not settings.tls_ca:
        return None
    cert = settings.tls_client_cert.read_bytes() if settings.tls_client_cert else None
    key = settings.tls_client_key.read_bytes() if settings.tls_client_key else None
    return grpc.ssl_channel_credentials(settings.tls_ca.read_bytes(), key, cert)


def open_channel(
    target: str,
    settings: Settings | None = None,
    token: str | None = None,
    deadline_s: float | None = None,
) -> grpc.Channel:
    """A channel to target with kiln's defaults (TLS when KILN_TLS_CA is set)."""
    settings = settings or get_settings()
    options = _channel_options(settings)
    if creds := _channel_credentials(settings):
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    token = settings.auth_token if token is None else token
    return grpc.intercept_channel(channel, _CallDefaults(token, deadline_s or settings.deadline_s))


def open_aio_channel(target: str, settings: Settings) -> grpc.aio.Channel:
    """An asyncio channel with the same options and TLS as open_channel. Callers pass
    call_metadata(settings.auth_token) and their own deadlines (aio channels take no sync
    interceptors)."""
    options = _channel_options(settings)
    if creds := _channel_credentials(settings):
        return grpc.aio.secure_channel(target, creds, options=options)
    return grpc.aio.insecure_channel(target, options=options)


def call_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The bearer token every kiln RPC but health carries (none when unset)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


class KilnClient:
    """The service stub, the Jobs stub and health of one kiln server."""

    def __init__(
        self,
        service: str,
        target: str | None = None,
        settings: Settings | None = None,
        token: str | None = None,
        deadline_s: float | None = None,
    ) -> None:
        import importlib

        from grpc_health.v1 import health_pb2_grpc

        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
        settings = settings or get_settings()
        self.service = service
        self.target = target or settings.target(service)
        self.channel = open_channel(self.target, settings, token, deadline_s)
        module, stub = STUBS[service]
        self.stub = getattr(importlib.import_module(module), stub)(self.channel)
        self.jobs = common_pb2_grpc.JobsStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def health_status(self, timeout: float = 2.0) -> str:
        """SERVING | NOT_SERVING | UNREACHABLE."""
        from grpc_health.v1 import health_pb2

        try:
            reply = self.health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAMES[self.service]), timeout=timeout
            )
        except grpc.RpcError:
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> KilnClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def downstream_error(exc: grpc.RpcError, service: str) -> errors.KilnError:
    """A failed call to another kiln service as the kiln error its caller should answer:
    the callee's verdict on the request keeps its code (NOT_FOUND, INVALID_ARGUMENT, ...);
    a callee that is down, slow or broken is UNAVAILABLE to the caller."""
    code, details = exc.code(), f"{service}: {exc.details()}"
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        trailer = dict(exc.trailing_metadata() or ()).get("kiln-error-field", "")
        return errors.InvalidInput(f"{service}.{trailer}" if trailer else service, details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return errors.FailedPrecondition(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(details)
    if code == grpc.StatusCode.CANCELLED:
        return errors.Cancelled(details)
    return errors.Unavailable(f"{details} ({code.name})")


def connect(service: str, **kwargs: Any) -> KilnClient:
    return KilnClient(service, **kwargs)
