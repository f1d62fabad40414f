"""Jobs: long work on Celery workers, with its record (state, progress, outputs) in Redis.

The record in Redis is the one source of truth a server reads for GetJob/WatchJob/ListJobs.
A job is submitted once per client request_id (idempotency key), delivered at least once
(acks_late + reject_on_worker_lost), and its task body writes outputs to deterministic keys
under `runs/<job_id>/` so a redelivery can skip what is already written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.common.errors import Cancelled, InvalidInput, KilnError, NotFound, Unavailable
from services.common.logs import job_id_var
from services.common.objectstore import ObjectRef, ObjectStore
from services.common.settings import Settings, get_settings

log = logging.getLogger(__name__)


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclass
class JobRecord:
    id: str
    service: str
    kind: str
    state: JobState = JobState.QUEUED
    request_id: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    progress: dict[str, Any] = field(default_factory=dict)
    outputs: list[ObjectRef] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    attempts: int = 0
    cancel_requested: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass
class JobResult:
    """What a task body returns: the committed outputs and a JSON-able summary."""

    outputs: list[ObjectRef] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def redis_client(settings: Settings | None = None) -> Any:
    """A redis client that retries connection errors with backoff before giving up."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    settings = settings or get_settings()
    return redis.Redis.from_url(
        settings.redis_url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), 6),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        socket_connect_timeout=2,
        health_check_interval=15,
        decode_responses=True,
    )


class JobStore:
    """Job records as Redis hashes `kiln:job:<id>`, indexed per service by creation time."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    @staticmethod
    def _key(job_id: str) -> str:
        return f"kiln:job:{job_id}"

    def _run(self, what: str, fn: Callable[[], Any]) -> Any:
        import redis

        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unavailable(f"job store (Redis) unreachable during {what}: {exc}") from exc

    def create(self, record: JobRecord) -> None:
        fields = {
            "id": record.id,
            "service": record.service,
            "kind": record.kind,
            "state": record.state.value,
            "request_id": record.request_id,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "progress": "{}",
            "outputs": "[]",
            "summary": "{}",
            "error": "",
            "attempts": 0,
            "cancel_requested": 0,
        }

        def write() -> None:
            pipe = self.redis.pipeline()
            pipe.hset(self._key(record.id), mapping=fields)
            pipe.zadd(f"kiln:jobs:{record.service}", {record.id: record.created_at})
            pipe.execute()

        self._run("create", write)

    def get(self, job_id: str) -> JobRecord:
        if not job_id or len(job_id) > 64:
            raise InvalidInput("job_id", "must be 1..64 characters")
        raw = self._run("get", lambda: self.redis.hgetall(self._key(job_id)))
        if not raw:
            raise NotFound(f"job {job_id} does not exist")
        return JobRecord(
            id=raw["id"],
            service=raw["service"],
            kind=raw["kind"],
            state=JobState(raw["state"]),
            request_id=raw.get("request_id", ""),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            progress=json.loads(raw.get("progress") or "{}"),
            outputs=[ObjectRef.from_dict(o) for o in json.loads(raw.get("outputs") or "[]")],
            summary=json.loads(raw.get("summary") or "{}"),
            error=raw.get("error", ""),
            attempts=int(raw.get("attempts", 0)),
            cancel_requested=raw.get("cancel_requested") == "1",
        )

    def _set(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        self._run("update", lambda: self.redis.hset(self._key(job_id), mapping=fields))

    def mark_running(self, job_id: str) -> int:
        """Counts a delivery and marks the job RUNNING; returns the attempt number."""
        attempts = self._run("start", lambda: self.redis.hincrby(self._key(job_id), "attempts"))
        self._set(job_id, state=JobState.RUNNING.value)
        return int(attempts)

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._set(job_id, progress=json.dumps(progress, default=float))

    def finish(
        self, job_id: str, state: JobState, result: JobResult | None = None, error: str = ""
    ) -> None:
        result = result or JobResult()
        self._set(
            job_id,
            state=state.value,
            error=error,
            outputs=json.dumps([o.to_dict() for o in result.outputs]),
            summary=json.dumps(result.summary, default=str),
        )

    def request_cancel(self, job_id: str) -> None:
        self._set(job_id, cancel_requested=1)

    def cancel_requested(self, job_id: str) -> bool:
        flag = self._run(
            "cancel check", lambda: self.redis.hget(self._key(job_id), "cancel_requested")
        )
        return flag == "1"

    def claim_request(
        self, service: str, request_id: str, job_id: str, fingerprint: str
    ) -> str | None:
        """Binds request_id to job_id unless already bound; returns the earlier job id.

        A reused request_id with a different request body is InvalidInput.
        """
        key = f"kiln:request:{service}:{request_id}"
        value = f"{job_id}:{fingerprint}"
        if self._run("claim", lambda: self.redis.set(key, value, nx=True, ex=7 * 24 * 3600)):
            return None
        earlier = self._run("claim", lambda: self.redis.get(key)) or ""
        earlier_id, _, earlier_fp = earlier.partition(":")
        if earlier_fp != fingerprint:
            raise InvalidInput(
                "request_id",
                f"{request_id!r} was already used for a different request; use a new request_id",
            )
        return earlier_id

    def release_request(self, service: str, request_id: str) -> None:
        self._run("release", lambda: self.redis.delete(f"kiln:request:{service}:{request_id}"))

    def list(
        self, service: str, limit: int = 50, states: frozenset[JobState] | None = None
    ) -> list[JobRecord]:
        ids = self._run(
            "list", lambda: self.redis.zrevrange(f"kiln:jobs:{service}", 0, max(limit * 20, 200))
        )
        records = []
        for job_id in ids:
            try:
                record = self.get(job_id)
            except NotFound:
                continue
            if states and record.state not in states:
                continue
            records.append(record)
            if len(records) >= limit:
                break
        return records


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class JobManager:
    """Submits, reads and cancels the jobs of one service (used by its server)."""

    def __init__(
        self,
        service: str,
        settings: Settings | None = None,
        celery: Any = None,
        store: JobStore | None = None,
    ) -> None:
        from services.common.celery_app import make_celery

        self.service = service
        self.settings = settings or get_settings()
        self.celery = celery or make_celery(service, self.settings)
        self.store = store or JobStore(redis_client(self.settings))

    def submit(self, kind: str, payload: dict[str, Any], request_id: str) -> JobRecord:
        """Queues `kiln.<service>.<kind>` once per request_id; returns the job record."""
        if not request_id:
            raise InvalidInput("request_id", "required: a client-chosen idempotency key")
        if len(request_id) > 128:
            raise InvalidInput("request_id", "must be at most 128 characters")
        job_id = uuid.uuid4().hex
        earlier = self.store.claim_request(self.service, request_id, job_id, fingerprint(payload))
        if earlier:
            return self.store.get(earlier)
        now = time.time()
        record = JobRecord(
            id=job_id,
            service=self.service,
            kind=kind,
            request_id=request_id,
            created_at=now,
            updated_at=now,
        )
        try:
            self.store.create(record)
            self.celery.send_task(
                f"kiln.{self.service}.{kind}",
                args=[job_id, payload],
                task_id=job_id,
                queue=self.service,
            )
        except Exception as exc:
            self.store.release_request(self.service, request_id)
            if isinstance(exc, KilnError):
                raise
            raise Unavailable(f"could not queue the job on {self.service}: {exc}") from exc
        return record

    def get(self, job_id: str) -> JobRecord:
        return self.store.get(job_id)

    def list(self, limit: int = 50, states: frozenset[JobState] | None = None) -> list[JobRecord]:
        return self.store.list(self.service, limit, states)

    def cancel(self, job_id: str) -> JobRecord:
        """Cooperative cancel: a queued job never runs; a running one stops at its next report."""
        record = self.store.get(job_id)
        if record.terminal:
            return record
        self.store.request_cancel(job_id)
        self.celery.control.revoke(job_id)
        if record.state == JobState.QUEUED:
            self.store.finish(job_id, JobState.CANCELLED, error="cancelled before it started")
        return self.store.get(job_id)


class JobContext:
    """What a task body gets: its job id, the object store, progress reporting, cancel checks."""

    def __init__(
        self,
        job_id: str,
        attempt: int,
        store: JobStore,
        objects: ObjectStore,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.jobs = store
        self.objects = objects
        self._on_progress = on_progress

    @property
    def run_prefix(self) -> str:
        return f"runs/{self.job_id}"

    def output_key(self, name: str) -> str:
        return f"{self.run_prefix}/{name}"

    def check_cancelled(self) -> None:
        if self.jobs.cancel_requested(self.job_id):
            raise Cancelled(f"job {self.job_id} was cancelled")

    def report(
        self, step: int, total: int, message: str = "", metrics: dict[str, float] | None = None
    ) -> None:
        """Records progress (and raises Cancelled if the job's owner cancelled it)."""
        progress = {
            "step": step,
            "total": total,
            "fraction": step / total if total else 0.0,
            "message": message,
            "metrics": metrics or {},
        }
        try:
            self.jobs.set_progress(self.job_id, progress)
            if self._on_progress:
                self._on_progress(progress)
            self.check_cancelled()
        except Unavailable as exc:  # progress is best effort: the work goes on through an outage
            log.warning("progress not recorded: %s", exc)


TaskBody = Callable[[JobContext, dict[str, Any]], JobResult]

_worker_resources: dict[int, tuple[JobStore, ObjectStore]] = {}


def worker_resources() -> tuple[JobStore, ObjectStore]:
    """Per-process clients, made after the worker forks."""
    pid = os.getpid()
    if pid not in _worker_resources:
        _worker_resources.clear()
        _worker_resources[pid] = (JobStore(redis_client()), ObjectStore())
    return _worker_resources[pid]


def _celery_progress(task: Any, progress: dict[str, Any]) -> None:
    """Mirrors progress into Celery's result backend (Redis), Unavailable when it is down."""
    import redis

    try:
        task.update_state(state="PROGRESS", meta=progress)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unavailable(f"result backend (Redis) unreachable: {exc}") from exc


def _finish(
    jobs: JobStore,
    job_id: str,
    state: JobState,
    result: JobResult | None = None,
    error: str = "",
) -> None:
    """Records a job's end, waiting out a Redis outage of up to KILN_REDIS_OUTAGE_S (the work
    is done; losing its record would make a redelivery redo it). Unavailable after that, and
    the unacknowledged message is redelivered once Redis is back."""
    deadline = time.monotonic() + get_settings().redis_outage_s
    delay = 0.5
    while True:
        try:
            jobs.finish(job_id, state, result, error)
            return
        except Unavailable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("waiting for Redis to record the job's end: %s", exc)
            time.sleep(delay)
            delay = min(2 * delay, 10.0)


def job_task(app: Any, name: str, **options: Any) -> Callable[[TaskBody], Any]:
    """Registers body as Celery task `name`, wrapped in the job lifecycle.

    The wrapper skips jobs already finished (a redelivery after success), marks RUNNING and
    counts attempts, maps Cancelled to CANCELLED and other errors to FAILED with a message.
    """

    def decorate(body: TaskBody) -> Any:
        @app.task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True, **options)
        def run(self: Any, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
            token = job_id_var.set(job_id)
            try:
                jobs, objects = worker_resources()
                record = jobs.get(job_id)
                if record.terminal:
                    log.info("job already %s; skipping redelivery", record.state)
                    return {"state": record.state.value}
                if record.cancel_requested:
                    jobs.finish(job_id, JobState.CANCELLED, error="cancelled before it started")
                    return {"state": JobState.CANCELLED.value}
                attempt = jobs.mark_running(job_id)
                ctx = JobContext(
                    job_id,
                    attempt,
                    jobs,
                    objects,
                    on_progress=lambda p: _celery_progress(self, p),
                )
                try:
                    result = body(ctx, payload)
                except Cancelled as exc:
                    _finish(jobs, job_id, JobState.CANCELLED, error=str(exc))
                    return {"state": JobState.CANCELLED.value}
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    _finish(jobs, job_id, JobState.FAILED, error=error)
                    log.exception("job failed")
                    raise
                _finish(jobs, job_id, JobState.SUCCEEDED, result)
                return {
                    "state": JobState.SUCCEEDED.value,
                    "outputs": [o.to_dict() for o in result.outputs],
                }
            finally:
                job_id_var.reset(token)

        return run

    return decorate
