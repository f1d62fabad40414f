"""gRPC server bootstrap shared by the five services (grpc.aio).

Every server gets: metrics, auth and error interceptors (Prometheus /metrics on
KILN_METRICS_PORT), the kiln.common.v1.Jobs service for its own queue and the loop that
requeues its jobs whose worker was lost, health (per service and overall), reflection, the
message cap, optional TLS/mTLS, and a SIGTERM drain: health goes NOT_SERVING, then the
server stops with a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.clients import KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS
from services.common.errors import Unavailable
from services.common.interceptors import AuthInterceptor, ErrorInterceptor
from services.common.jobs import JobManager
from services.common.jobs_servicer import register_jobs
from services.common.metrics import MetricsInterceptor, serve_metrics
from services.common.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Registers a service's servicers on the server (they submit jobs through the JobManager)
# and returns their full service names.
Registrar = Callable[[grpc.aio.Server, Settings, JobManager], Sequence[str]]


@dataclass
class KilnServer:
    service: str
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    settings: Settings
    jobs: JobManager
    port: int = 0
    metrics_port: int = 0
    _recovery: asyncio.Task | None = None

    async def start(self) -> None:
        await self.server.start()
        self.metrics_port = serve_metrics(self.service, self.settings)
        for name in (*self.service_names, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._recovery = asyncio.create_task(self._recover_lost_jobs())

    async def stop(self, grace: float) -> None:
        if self._recovery:
            self._recovery.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def _recover_lost_jobs(self) -> None:
        """Every third of KILN_JOB_LOST_AFTER_S: requeue the jobs whose worker is gone."""
        interval = max(1.0, self.settings.job_lost_after_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.jobs.recover_lost)
            except Unavailable as exc:
                log.warning("lost-job recovery skipped: %s", exc)
            except Exception:
                log.exception("lost-job recovery failed")


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert:
        return None
    if not settings.tls_key:
        raise ValueError("KILN_TLS_CERT needs KILN_TLS_KEY")
    key, cert = settings.tls_key.read_bytes(), settings.tls_cert.read_bytes()
    ca = settings.tls_ca.read_bytes() if settings.tls_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def build_server(
    service: str, registrar: Registrar, settings: Settings | None = None, address: str | None = None
) -> KilnServer:
    """Builds (does not start) the server of `service` bound to address (host:port; port 0
    picks a free one, reported in .port)."""
    settings = settings or get_settings()
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(service)]
    if settings.auth_token:
        interceptors.append(AuthInterceptor(settings.auth_token))
    interceptors.append(ErrorInterceptor())
    options = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        # clients ping every KEEPALIVE_TIME_MS under long streams: allow it, and ping back
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    jobs = JobManager(service, settings)
    names = [*registrar(server, settings, jobs), register_jobs(server, jobs)]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = address or f"{settings.listen_host}:{settings.port(service)}"
    credentials = _server_credentials(settings)
    if credentials:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    return KilnServer(service, server, health_servicer, tuple(names), settings, jobs, port)


async def serve(service: str, registrar: Registrar, settings: Settings | None = None) -> None:
    """Runs the server until SIGTERM/SIGINT, then drains."""
    settings = settings or get_settings()
    kiln_server = build_server(service, registrar, settings)
    await kiln_server.start()
    log.info(
        "%s serving on %s:%d (metrics port %d)",
        service,
        settings.listen_host,
        kiln_server.port,
        kiln_server.metrics_port,
        extra={"fields": {"port": kiln_server.port, "metrics_port": kiln_server.metrics_port}},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("%s draining for up to %.1fs", service, settings.shutdown_grace_s)
    await kiln_server.stop(settings.shutdown_grace_s)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
