"""Job records in Redis, and which delivery owns a running job."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from services.common.errors import InvalidInput, KilnError, NotFound, Unavailable
from services.common.jobs.records import TERMINAL, JobRecord, JobResult, JobState
from services.common.objectstore import ObjectRef
from services.common.settings import Settings, get_settings


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
            "error_code": "",
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
        return self._record(raw)

    @staticmethod
    def _record(raw: dict[str, str]) -> JobRecord:
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
            error_code=raw.get("error_code", ""),
            attempts=int(raw.get("attempts", 0)),
            cancel_requested=raw.get("cancel_requested") == "1",
            owner=raw.get("owner", ""),
            heartbeat_at=float(raw.get("heartbeat_at") or 0.0),
            payload=json.loads(raw.get("payload") or "{}"),
        )

    def _records(self, what: str, ids: list[str]) -> dict[str, JobRecord]:
        """The records of ids that exist, read in one round trip."""

        def read() -> list[dict[str, str]]:
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._key(job_id))
            return pipe.execute()

        raws = self._run(what, read) if ids else []
        return {job_id: self._record(raw) for job_id, raw in zip(ids, raws, strict=True) if raw}

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
        self,
        job_id: str,
        state: JobState,
        result: JobResult | None = None,
        error: KilnError | None = None,
    ) -> bool:
        """Ends the job unless it has already ended; returns whether this call ended it."""
        result = result or JobResult()
        fields = {
            "state": state.value,
            "error": str(error) if error else "",
            "error_code": error.code if error else "",
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
        """The service's newest jobs (in states, when given), newest first."""
        ids = self._run(
            "list", lambda: self.redis.zrevrange(f"kiln:jobs:{service}", 0, max(limit * 20, 200))
        )
        records = self._records("list", ids).values()
        return [r for r in records if not states or r.state in states][:limit]

    def active(self, service: str) -> list[JobRecord]:
        """The service's jobs that have not ended (QUEUED or RUNNING)."""
        ids = sorted(self._run("active", lambda: self.redis.smembers(self._active(service))))
        records = self._records("active", ids)
        gone = [job_id for job_id in ids if job_id not in records]
        if gone:
            self._run("active", lambda: self.redis.srem(self._active(service), *gone))
        return list(records.values())


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
