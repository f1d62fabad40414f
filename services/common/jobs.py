"""Jobs: long work on Celery workers, with its record (state, progress, outputs) in Redis.

The record in Redis is the one source of truth a server reads for GetJob/WatchJob/ListJobs.
A job is submitted once per client request_id (idempotency key), delivered at least once
(acks_late + reject_on_worker_lost), and its task body writes outputs to deterministic keys
under `runs/<job_id>/` so a redelivery can skip what is already written.

Supervision: the delivery that runs a job owns it (`owner`, host:pid) and heartbeats every
KILN_JOB_HEARTBEAT_S. A second delivery of a job whose owner is alive does nothing. The
service's server requeues a RUNNING job whose heartbeat is older than KILN_JOB_LOST_AFTER_S
(its worker died with its message unacknowledged) and fails it after KILN_JOB_MAX_ATTEMPTS
deliveries. CancelJob is cooperative first (the body's next progress report raises Cancelled)
and forced after KILN_CANCEL_GRACE_S (the heartbeat records CANCELLED and kills its process;
the worker starts a fresh child). A job ends once: the first terminal state recorded wins.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from services.common.errors import (
    Cancelled,
    InvalidInput,
    KilnError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
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
    owner: str = ""  # host:pid of the delivery running it
    heartbeat_at: float = 0.0
    payload: dict[str, Any] = field(default_factory=dict)

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
    """Job records as Redis hashes `kiln:job:<id>`, indexed per service by creation time, with
    the set `kiln:active:<service>` holding the ids of jobs not yet ended."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    @staticmethod
    def _key(job_id: str) -> str:
        return f"kiln:job:{job_id}"

    @staticmethod
    def _active(service: str) -> str:
        return f"kiln:active:{service}"

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
            "owner": "",
            "heartbeat_at": 0.0,
            "payload": json.dumps(record.payload),
        }

        def write() -> None:
            pipe = self.redis.pipeline()
            pipe.hset(self._key(record.id), mapping=fields)
            pipe.zadd(f"kiln:jobs:{record.service}", {record.id: record.created_at})
            pipe.sadd(self._active(record.service), record.id)
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
            owner=raw.get("owner", ""),
            heartbeat_at=float(raw.get("heartbeat_at") or 0.0),
            payload=json.loads(raw.get("payload") or "{}"),
        )

    def _set(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        self._run("update", lambda: self.redis.hset(self._key(job_id), mapping=fields))

    def _transition(self, job_id: str, what: str, decide: Callable[[JobRecord], Any]) -> Any:
        """Reads the record and applies decide's fields atomically (optimistic WATCH/MULTI).

        decide returns (fields to set or None to leave the record, value to return).
        """
        import redis

        key = self._key(job_id)

        def attempt() -> Any:
            with self.redis.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        record = self.get(job_id)
                        fields, value = decide(record)
                        pipe.multi()
                        if fields:
                            pipe.hset(key, mapping={**fields, "updated_at": time.time()})
                            if fields.get("state") in TERMINAL:
                                pipe.srem(self._active(record.service), job_id)
                        pipe.execute()
                        return value
                    except redis.WatchError:
                        continue

        return self._run(what, attempt)

    def claim(self, job_id: str, owner: str, lost_after_s: float) -> int | None:
        """Makes `owner` the delivery running the job and counts the attempt.

        None when the job has ended or another delivery holds it: its owner heartbeat less
        than lost_after_s ago and, when on this host, its process is alive.
        """

        def decide(record: JobRecord) -> tuple[dict[str, Any] | None, int | None]:
            if record.terminal:
                return None, None
            if record.state == JobState.RUNNING and owner_alive(
                record.owner, record.heartbeat_at, lost_after_s
            ):
                return None, None
            attempts = record.attempts + 1
            fields = {
                "state": JobState.RUNNING.value,
                "attempts": attempts,
                "owner": owner,
                "heartbeat_at": time.time(),
                "error": "",
            }
            return fields, attempts

        return self._transition(job_id, "claim", decide)

    def heartbeat(self, job_id: str, owner: str) -> tuple[bool, bool]:
        """Records that owner still runs the job; returns (still its owner, cancel requested)."""
        key = self._key(job_id)
        current, state, cancel = self._run(
            "heartbeat", lambda: self.redis.hmget(key, "owner", "state", "cancel_requested")
        )
        owned = current == owner and state == JobState.RUNNING.value
        if owned:
            self._run("heartbeat", lambda: self.redis.hset(key, "heartbeat_at", time.time()))
        return owned, cancel == "1"

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._set(job_id, progress=json.dumps(progress, default=float))

    def finish(
        self, job_id: str, state: JobState, result: JobResult | None = None, error: str = ""
    ) -> bool:
        """Ends the job unless it has already ended; returns whether this call ended it."""
        result = result or JobResult()
        fields = {
            "state": state.value,
            "error": error,
            "outputs": json.dumps([o.to_dict() for o in result.outputs]),
            "summary": json.dumps(result.summary, default=str),
        }

        def decide(record: JobRecord) -> tuple[dict[str, Any] | None, bool]:
            return (None, False) if record.terminal else (fields, True)

        return self._transition(job_id, "finish", decide)

    def requeue(self, job_id: str, reason: str) -> bool:
        """RUNNING -> QUEUED for a new delivery, unless the job changed meanwhile."""

        def decide(record: JobRecord) -> tuple[dict[str, Any] | None, bool]:
            if record.state != JobState.RUNNING:
                return None, False
            return {"state": JobState.QUEUED.value, "owner": "", "error": reason}, True

        return self._transition(job_id, "requeue", decide)

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

    def active(self, service: str) -> list[JobRecord]:
        """The service's jobs that have not ended (QUEUED or RUNNING)."""
        ids = self._run("active", lambda: self.redis.smembers(self._active(service)))
        records, gone = [], []
        for job_id in ids:
            try:
                records.append(self.get(job_id))
            except NotFound:
                gone.append(job_id)
        if gone:
            self._run("active", lambda: self.redis.srem(self._active(service), *gone))
        return records


def this_process() -> str:
    """The owner name of a delivery running in this process: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str, heartbeat_at: float, lost_after_s: float) -> bool:
    """Whether a job's owner still runs it: a heartbeat newer than lost_after_s and, for an
    owner on this host, a live process (a dead one is known at once, not after the wait)."""
    if not owner or time.time() - heartbeat_at > lost_after_s:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    @functools.cached_property
    def objects(self) -> ObjectStore:
        """The object store the service's jobs read their inputs from."""
        return ObjectStore(self.settings)

    def input(
        self, ref: ObjectRef, field: str, max_bytes: int = 0, limit: str = "KILN_MAX_INPUT_BYTES"
    ) -> dict[str, Any]:
        """A job's input object checked at submit (stored, at most max_bytes, by default
        KILN_MAX_INPUT_BYTES), as payload JSON; InvalidInput on `field` otherwise."""
        checked = self.objects.input(ref, field, max_bytes or self.settings.max_input_bytes, limit)
        return ObjectRef(ref.bucket, ref.key, ref.sha256 or checked.sha256, checked.size).to_dict()

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
            payload=payload,
        )
        try:
            self.store.create(record)
            self._send(record)
        except Exception as exc:
            self.store.release_request(self.service, request_id)
            if isinstance(exc, KilnError):
                raise
            raise Unavailable(f"could not queue the job on {self.service}: {exc}") from exc
        return record

    def _send(self, record: JobRecord) -> None:
        self.celery.send_task(
            f"kiln.{self.service}.{record.kind}",
            args=[record.id, record.payload],
            task_id=record.id,
            queue=self.service,
        )

    def get(self, job_id: str) -> JobRecord:
        return self.store.get(job_id)

    def list(self, limit: int = 50, states: frozenset[JobState] | None = None) -> list[JobRecord]:
        return self.store.list(self.service, limit, states)

    def cancel(self, job_id: str) -> JobRecord:
        """A queued job ends CANCELLED now and never runs; a running one stops at its next
        progress report, or is stopped by force after KILN_CANCEL_GRACE_S."""
        record = self.store.get(job_id)
        if record.terminal:
            return record
        self.store.request_cancel(job_id)
        if record.state == JobState.QUEUED:
            self.store.finish(job_id, JobState.CANCELLED, error="cancelled before it started")
        return self.store.get(job_id)

    def recover_lost(self) -> list[tuple[str, JobState]]:
        """Requeues the RUNNING jobs whose worker is gone (no heartbeat for
        KILN_JOB_LOST_AFTER_S); fails those that used KILN_JOB_MAX_ATTEMPTS deliveries and ends
        the cancelled ones. Returns (job id, its new state) for each."""
        lost_after = self.settings.job_lost_after_s
        recovered = []
        for record in self.store.active(self.service):
            if record.state != JobState.RUNNING or owner_alive(
                record.owner, record.heartbeat_at, lost_after
            ):
                continue
            silent = time.time() - record.heartbeat_at
            reason = f"its worker {record.owner or '?'} was lost (no heartbeat for {silent:.0f} s)"
            if record.cancel_requested:
                state = JobState.CANCELLED
                ended = self.store.finish(record.id, state, error=f"cancelled; {reason}")
            elif record.attempts >= self.settings.job_max_attempts:
                state = JobState.FAILED
                ended = self.store.finish(
                    record.id, state, error=f"{reason} on attempt {record.attempts}; giving up"
                )
            else:
                state = JobState.QUEUED
                ended = self.store.requeue(
                    record.id, f"requeued after attempt {record.attempts}: {reason}"
                )
                if ended:
                    self._send(record)
            if ended:
                log.warning("job %s: %s -> %s", record.id, reason, state.value)
                recovered.append((record.id, state))
        return recovered


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


class Heartbeat(threading.Thread):
    """Keeps a running job's ownership fresh and makes its cancellation stop the work.

    Every KILN_JOB_HEARTBEAT_S it records the heartbeat. Once the job's owner asked to cancel,
    the body has KILN_CANCEL_GRACE_S to stop at its next progress report; after that, and at
    once when another delivery took the job over, `stop_by_force` runs (in a worker child: the
    job is recorded CANCELLED and the process killed; its Celery worker starts a fresh child).
    """

    def __init__(
        self,
        jobs: JobStore,
        job_id: str,
        owner: str,
        settings: Settings,
        stop_by_force: Callable[[], None],
    ) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.jobs, self.job_id, self.owner = jobs, job_id, owner
        self.interval, self.grace = settings.job_heartbeat_s, settings.cancel_grace_s
        self.stop_by_force = stop_by_force
        self.done = threading.Event()

    def run(self) -> None:
        deadline = None
        while not self.done.wait(self.interval):
            try:
                owned, cancel = self.jobs.heartbeat(self.job_id, self.owner)
                if owned and not cancel:
                    continue
                if deadline is None:
                    deadline = time.monotonic() + (self.grace if owned else 0.0)
                if time.monotonic() < deadline:
                    continue
                if owned:
                    self.jobs.finish(
                        self.job_id,
                        JobState.CANCELLED,
                        error=f"cancelled; stopped by force after {self.grace:g} s",
                    )
            except Unavailable as exc:
                log.warning("heartbeat not recorded: %s", exc)
                continue
            log.warning("job %s is %s: stopping it", self.job_id, "cancelled" if owned else "lost")
            self.stop_by_force()
            return


_in_worker_child = False


def _kill_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def memory_cap_mb(settings: Settings) -> int:
    """KILN_WORKER_MEMORY_MB resolved: -1 is half of the memory this machine or container has
    (no cap where CUDA is in use: its driver reserves far more address space than it
    touches); 0 is no cap."""
    if settings.worker_memory_mb >= 0:
        return settings.worker_memory_mb
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return 0
    return usable_memory_bytes() // (2 << 20)


def usable_memory_bytes() -> int:
    """Physical memory, or the cgroup's memory limit when it is lower (a container)."""
    usable = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            usable = min(usable, int(text))
    return usable


def _init_worker_child(**_: Any) -> None:
    """In each prefork child: allow the hard stop and cap the child's address space."""
    global _in_worker_child
    _in_worker_child = True
    cap = memory_cap_mb(get_settings())
    if cap:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (cap << 20, hard))
        log.info("worker child %d: address space capped at %d MiB", os.getpid(), cap)


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def job_task(app: Any, name: str, **options: Any) -> Callable[[TaskBody], Any]:
    """Registers body as Celery task `name`, wrapped in the job lifecycle.

    The wrapper skips deliveries of jobs that ended or that a live delivery runs, claims the
    job (RUNNING, attempt counted, heartbeat started), fails it past KILN_JOB_MAX_ATTEMPTS,
    maps Cancelled to CANCELLED, running out of memory to FAILED ResourceExhausted (the
    worker lives on), and other errors to FAILED with a message.
    """
    from celery.signals import worker_process_init

    worker_process_init.connect(_init_worker_child, weak=False, dispatch_uid="kiln-job-child")

    def decorate(body: TaskBody) -> Any:
        @app.task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True, **options)
        def run(self: Any, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
            token = job_id_var.set(job_id)
            try:
                return _run_job(self, body, job_id, payload)
            finally:
                job_id_var.reset(token)

        return run

    return decorate


def _run_job(task: Any, body: TaskBody, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    settings = get_settings()
    jobs, objects = worker_resources()
    owner = this_process()
    attempt = jobs.claim(job_id, owner, settings.job_lost_after_s)
    if attempt is None:
        record = jobs.get(job_id)
        log.info("job is %s (owner %s); skipping this delivery", record.state, record.owner)
        return {"state": record.state.value}
    if attempt > settings.job_max_attempts:
        error = f"delivered {attempt} times (KILN_JOB_MAX_ATTEMPTS={settings.job_max_attempts})"
        _finish(jobs, job_id, JobState.FAILED, error=f"giving up: {error}")
        return {"state": JobState.FAILED.value}
    if jobs.cancel_requested(job_id):
        _finish(jobs, job_id, JobState.CANCELLED, error="cancelled before it started")
        return {"state": JobState.CANCELLED.value}
    ctx = JobContext(
        job_id, attempt, jobs, objects, on_progress=lambda p: _celery_progress(task, p)
    )
    stop = _kill_this_process if _in_worker_child else lambda: None
    heartbeat = Heartbeat(jobs, job_id, owner, settings, stop)
    heartbeat.start()
    try:
        result = body(ctx, payload)
    except Cancelled as exc:
        _finish(jobs, job_id, JobState.CANCELLED, error=str(exc))
        return {"state": JobState.CANCELLED.value}
    except Exception as exc:
        if _out_of_memory(exc):
            exc = ResourceExhausted(
                f"the job ran out of memory under its worker's cap of "
                f"{memory_cap_mb(settings)} MiB (KILN_WORKER_MEMORY_MB): {exc}"
            )
        _finish(jobs, job_id, JobState.FAILED, error=f"{type(exc).__name__}: {exc}")
        log.exception("job failed")
        return {"state": JobState.FAILED.value}
    finally:
        heartbeat.done.set()
    _finish(jobs, job_id, JobState.SUCCEEDED, result)
    return {"state": JobState.SUCCEEDED.value, "outputs": [o.to_dict() for o in result.outputs]}
