"""Prometheus metrics of a kiln server, served at http://<bind host>:<KILN_METRICS_PORT>/metrics
(0: off). One server per process in deployments, so the process-wide default registry holds
one service's series; every series still carries `service` where it applies.

- kiln_rpc_requests_total{service, method, code}: RPCs by final status (UNAUTHENTICATED too)
- kiln_rpc_latency_seconds{service, method}: handler time (a stream: until its last message)
- kiln_queue_depth{service}: jobs waiting in the service's Celery queue (Redis LLEN, read at
  scrape time; the same list KEDA scales workers on)
- kiln_generated_tokens_total{model}, kiln_generation_seconds_total{model}: tokens/s of a
  model is rate(tokens) / rate(seconds)
- kiln_kv_bytes_full_total / kiln_kv_bytes_saved_total{model, method, bits}: what the
  requests' KV caches would take uncompressed, and how much compression saved
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.settings import Settings

log = logging.getLogger("kiln.metrics")

RPC_REQUESTS = Counter(
    "kiln_rpc_requests", "RPCs handled, by final status code", ["service", "method", "code"]
)
RPC_LATENCY = Histogram(
    "kiln_rpc_latency_seconds",
    "RPC handler time in seconds",
    ["service", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
GENERATED_TOKENS = Counter("kiln_generated_tokens", "tokens generated", ["model"])
GENERATION_SECONDS = Counter("kiln_generation_seconds", "seconds spent generating", ["model"])
KV_BYTES_FULL = Counter(
    "kiln_kv_bytes_full",
    "bytes the generations' KV caches would hold uncompressed",
    ["model", "method", "bits"],
)
KV_BYTES_SAVED = Counter(
    "kiln_kv_bytes_saved",
    "bytes KV compression saved (uncompressed minus held)",
    ["model", "method", "bits"],
)


def record_generation(model: str, completion_tokens: int, seconds: float, kv: Any) -> None:
    """Counts one finished generation; kv is its pb KVStats (bytes_full 0: no compression)."""
    GENERATED_TOKENS.labels(model).inc(completion_tokens)
    GENERATION_SECONDS.labels(model).inc(seconds)
    if kv.bytes_full:
        labels = (model, kv.method, str(kv.bits))
        KV_BYTES_FULL.labels(*labels).inc(kv.bytes_full)
        KV_BYTES_SAVED.labels(*labels).inc(max(0, kv.bytes_full - kv.bytes_used))


class QueueDepthCollector(Collector):
    """kiln_queue_depth for the services whose servers run in this process, read at scrape."""

    def __init__(self) -> None:
        self.queues: dict[str, Any] = {}  # service -> redis client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kiln_queue_depth", "jobs waiting in the service's Celery queue", labels=["service"]
        )
        for service, client in self.queues.items():
            try:
                family.add_metric([service], client.llen(service))
            except Exception as exc:  # Redis down: the series is absent, not a failed scrape
                log.warning("queue depth of %s unavailable: %s", service, exc)
        yield family


_queue_depth = QueueDepthCollector()
REGISTRY.register(_queue_depth)


def serve_metrics(service: str, settings: Settings) -> int:
    """Starts the /metrics endpoint if KILN_METRICS_PORT is set; returns its port (0: off)."""
    import redis

    if not settings.metrics_port:
        return 0
    # fails fast (not redis_client's retries with backoff): a scrape must not hang on Redis
    _queue_depth.queues[service] = redis.Redis.from_url(
        settings.redis_url, socket_timeout=1, socket_connect_timeout=1
    )
    server, _ = start_http_server(settings.metrics_port, addr=settings.listen_host)
    return server.server_port


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """The outermost interceptor: counts every RPC by its final code and times it."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        from services.common.interceptors import rebuild_handler

        handler = await continuation(details)
        if handler is None:
            return None
        method, service = details.method, self.service

        def observe(context: grpc.aio.ServicerContext, start: float, failed: bool) -> None:
            code = context.code()  # a StatusCode; None: success, or the client went away
            name = code.name if code is not None else ("CANCELLED" if failed else "OK")
            RPC_REQUESTS.labels(service, method, name).inc()
            RPC_LATENCY.labels(service, method).observe(time.perf_counter() - start)

        def wrap(behaviour: Any, streaming: bool) -> Any:
            if streaming:

                async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    start, failed = time.perf_counter(), True
                    try:
                        async for item in behaviour(request, context):
                            yield item
                        failed = False
                    finally:
                        observe(context, start, failed)

                return stream

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start, failed = time.perf_counter(), True
                try:
                    response = await behaviour(request, context)
                    failed = False
                    return response
                finally:
                    observe(context, start, failed)

            return unary

        return rebuild_handler(handler, wrap)
