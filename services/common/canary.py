"""The canary job: exercises queue, worker and object store end to end on any service.

It writes `shards` shard objects under runs/<job_id>/ and commits a manifest. A shard already
written by an earlier delivery is verified and reused, never rewritten, so a job redelivered
after its worker died finishes with every shard written exactly once.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from services.common.errors import InvalidInput, NotFound
from services.common.jobs import JobContext, JobResult, job_task

MAX_SHARDS = 1000
MAX_SHARD_SECONDS = 60.0
MAX_ALLOCATE_MB = 65536


def validate(shards: int, shard_seconds: float, allocate_mb: int = 0) -> dict[str, Any]:
    if not 1 <= shards <= MAX_SHARDS:
        raise InvalidInput("shards", f"must be in 1..{MAX_SHARDS}, got {shards}")
    if not 0 <= shard_seconds <= MAX_SHARD_SECONDS:
        raise InvalidInput(
            "shard_seconds", f"must be in 0..{MAX_SHARD_SECONDS:g}, got {shard_seconds}"
        )
    if not 0 <= allocate_mb <= MAX_ALLOCATE_MB:
        raise InvalidInput("allocate_mb", f"must be in 0..{MAX_ALLOCATE_MB}, got {allocate_mb}")
    return {"shards": shards, "shard_seconds": shard_seconds, "allocate_mb": allocate_mb}


def run_canary(ctx: JobContext, payload: dict[str, Any]) -> JobResult:
    shards, seconds = int(payload["shards"]), float(payload["shard_seconds"])
    allocate = int(payload.get("allocate_mb", 0)) << 20
    refs, reused, held = [], 0, []
    for index in range(shards):
        if allocate:
            held.append(bytearray(allocate))
        key = ctx.output_key(f"shard-{index:05d}.json")
        try:
            ctx.objects.get_bytes(key)  # verifies the sha256 of what an earlier delivery wrote
            ref = ctx.objects.stat(key)
            reused += 1
        except NotFound:
            time.sleep(seconds)
            digest = hashlib.sha256(f"{ctx.job_id}:{index}".encode()).hexdigest()
            ref = ctx.objects.put_json(
                key, {"shard": index, "digest": digest, "attempt": ctx.attempt, "pid": os.getpid()}
            )
        refs.append(ref)
        ctx.report(index + 1, shards, f"shard {index + 1}/{shards}")
    manifest = ctx.objects.commit(ctx.run_prefix, refs, {"kind": "canary", "shards": shards})
    return JobResult([manifest], {"shards": shards, "reused": reused, "attempt": ctx.attempt})


def register_canary(app: Any, service: str) -> Any:
    return job_task(app, f"kiln.{service}.canary")(run_canary)
