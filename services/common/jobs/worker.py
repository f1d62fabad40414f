"""The worker side of jobs: the Celery task wrapper, the context a task body gets, the
heartbeat that keeps its ownership and enforces cancellation, and the memory cap."""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.errors import (
    Aborted,
    Cancelled,
    DeadlineExceeded,
    KilnError,
    ResourceExhausted,
    Unavailable,
)
from services.common.jobs.records import JobResult, JobState
from services.common.jobs.store import JobStore, redis_client, this_process
from services.common.logs import job_id_var
from services.common.objectstore import ObjectStore
from services.common.settings import Settings, get_settings

log = logging.getLogger(__name__)


class JobContext:
    """What a task body gets: its job id, the object store, progress reporting, cancel checks."""

    def __init__(
        self,
        job_id: str,
        attempt: int,
        store: JobStore,
        objects: ObjectStore,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.jobs = store
        self.objects = objects

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


def _finish(
    jobs: JobStore,
    job_id: str,
    state: JobState,
    result: JobResult | None = None,
    error: KilnError | None = None,
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
                        error=Cancelled(f"cancelled; stopped by force after {self.grace:g} s"),
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
    job (RUNNING, attempt counted, heartbeat started), and ends it once: SUCCEEDED with the
    body's result; CANCELLED on Cancelled; FAILED ABORTED past KILN_JOB_MAX_ATTEMPTS,
    RESOURCE_EXHAUSTED when it ran out of memory (the worker lives on), DEADLINE_EXCEEDED past
    its time limit, a KilnError's own code and message, or INTERNAL with a message that points
    to the worker's log (which has the traceback) for anything else.
    """
    from celery.signals import worker_process_init

    worker_process_init.connect(_init_worker_child, weak=False, dispatch_uid="kiln-job-child")

    def decorate(body: TaskBody) -> Any:
        @app.task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True, **options)
        def run(self: Any, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
            token = job_id_var.set(job_id)
            try:
                return _run_job(name.split(".")[1], body, job_id, payload)
            finally:
                job_id_var.reset(token)

        return run

    return decorate


def _run_job(service: str, body: TaskBody, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    settings = get_settings()
    jobs, objects = worker_resources()
    owner = this_process()
    attempt = jobs.claim(job_id, owner, settings.job_lost_after_s)
    if attempt is None:
        record = jobs.get(job_id)
        log.info("job is %s (owner %s); skipping this delivery", record.state, record.owner)
        return {"state": record.state.value}
    if attempt > settings.job_max_attempts:
        limit = f"KILN_JOB_MAX_ATTEMPTS={settings.job_max_attempts}"
        error = Aborted(f"giving up: delivered {attempt} times ({limit})")
        _finish(jobs, job_id, JobState.FAILED, error=error)
        return {"state": JobState.FAILED.value}
    if jobs.cancel_requested(job_id):
        _finish(jobs, job_id, JobState.CANCELLED, error=Cancelled("cancelled before it started"))
        return {"state": JobState.CANCELLED.value}
    ctx = JobContext(job_id, attempt, jobs, objects)
    stop = _kill_this_process if _in_worker_child else lambda: None
    heartbeat = Heartbeat(jobs, job_id, owner, settings, stop)
    heartbeat.start()
    try:
        result = body(ctx, payload)
    except Cancelled as exc:
        _finish(jobs, job_id, JobState.CANCELLED, error=exc)
        return {"state": JobState.CANCELLED.value}
    except Exception as exc:
        log.exception("job failed")
        _finish(jobs, job_id, JobState.FAILED, error=job_error(exc, service, settings))
        return {"state": JobState.FAILED.value}
    finally:
        heartbeat.done.set()
    _finish(jobs, job_id, JobState.SUCCEEDED, result)
    return {"state": JobState.SUCCEEDED.value, "outputs": [o.to_dict() for o in result.outputs]}


def job_error(exc: Exception, service: str, settings: Settings) -> KilnError:
    """What a FAILED job tells its owner: a code and a message without internals."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, KilnError):
        return exc
    if _out_of_memory(exc):
        return ResourceExhausted(
            f"the job ran out of memory under its worker's cap of "
            f"{memory_cap_mb(settings)} MiB (KILN_WORKER_MEMORY_MB)"
        )
    if isinstance(exc, SoftTimeLimitExceeded):
        return DeadlineExceeded(
            f"the job ran past its time limit of {settings.task_time_limit_s} s "
            "(KILN_TASK_TIME_LIMIT_S)"
        )
    return KilnError(
        f"the job failed unexpectedly ({type(exc).__name__}); the {service} worker's log has "
        "the traceback"
    )
