"""The Celery app factory: one queue per service, JSON only, at-least-once delivery.

Tasks are named `kiln.<service>.<name>` and routed to the queue `<service>`; producers
send by name (`send_task`), so a server never imports another service's heavy code.
"""

from __future__ import annotations

from celery import Celery

from services.common.settings import SERVICES, Settings, get_settings


def queue_of(task_name: str) -> str:
    """kiln.<service>.<name> -> <service>."""
    parts = task_name.split(".")
    if len(parts) < 3 or parts[0] != "kiln" or parts[1] not in SERVICES:
        raise ValueError(f"task name {task_name!r} is not kiln.<service>.<name>")
    return parts[1]


def make_celery(service: str, settings: Settings | None = None) -> Celery:
    """A Celery app whose worker consumes the `service` queue (or only produces, in servers)."""
    settings = settings or get_settings()
    restore_interval = max(1, min(60, settings.effective_visibility_timeout_s // 5))
    app = Celery(f"kiln-{service}", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_pool="prefork",
        worker_concurrency=settings.worker_concurrency,
        task_time_limit=settings.task_time_limit_s,
        # the soft limit raises inside the task first, so it can record FAILED cleanly
        task_soft_time_limit=settings.task_time_limit_s
        - min(30, max(1, settings.task_time_limit_s // 10)),
        broker_transport_options={
            "visibility_timeout": settings.effective_visibility_timeout_s,
            # sweep for messages of dead workers (unacked past the visibility timeout) every
            # interval seconds; kombu's default scans only every 10th sweep (100 s)
            "unacked_restore_interval": restore_interval,
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={
            "visibility_timeout": settings.effective_visibility_timeout_s,
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=service,
        task_routes={f"kiln.{name}.*": {"queue": name} for name in SERVICES},
        task_track_started=True,
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
