"""The server side of jobs: submit, read, cancel, and requeue those whose worker was lost."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import uuid
from typing import Any

from services.common.errors import Aborted, Cancelled, InvalidInput, KilnError, Unavailable
from services.common.jobs.records import JobRecord, JobState
from services.common.jobs.store import JobStore, owner_alive, redis_client
from services.common.objectstore import ObjectRef, ObjectStore
from services.common.settings import Settings, get_settings

log = logging.getLogger(__name__)


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
        return self.objects.input(
            ref, field, max_bytes or self.settings.max_input_bytes, limit
        ).to_dict()

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
            self.store.finish(
                job_id, JobState.CANCELLED, error=Cancelled("cancelled before it started")
            )
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
                ended = self.store.finish(record.id, state, error=Cancelled(f"cancelled; {reason}"))
            elif record.attempts >= self.settings.job_max_attempts:
                state = JobState.FAILED
                ended = self.store.finish(
                    record.id,
                    state,
                    error=Aborted(f"{reason} on attempt {record.attempts}; giving up"),
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
