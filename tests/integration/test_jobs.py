"""Jobs end to end: gRPC server -> Redis queue -> Celery worker process -> S3."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from kiln.common.v1 import common_pb2
from services.common.clients import KilnClient
from services.common.objectstore import ObjectStore
from services.common.settings import Settings, get_settings


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def fast_redelivery(kiln_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Task limit 8 s and Redis visibility timeout 10 s, so a lost message returns quickly."""
    monkeypatch.setenv("KILN_TASK_TIME_LIMIT_S", "8")
    monkeypatch.setenv("KILN_VISIBILITY_TIMEOUT_S", "10")
    get_settings.cache_clear()
    return get_settings()


def submit(client: KilnClient, request_id: str, shards: int, seconds: float) -> common_pb2.Job:
    return client.jobs.SubmitCanary(
        common_pb2.SubmitCanaryRequest(request_id=request_id, shards=shards, shard_seconds=seconds)
    )


def shard_attempts(store: ObjectStore, job_id: str) -> list[int]:
    refs = store.manifest_refs(f"runs/{job_id}")
    return [store.get_json(ref)["attempt"] for _, ref in sorted(refs.items())]


def test_job_runs_on_worker_and_streams_progress(grpc_server, worker, kiln_env) -> None:
    server = grpc_server("judge", kiln_env)
    worker("judge")
    with KilnClient("judge", target=server.target) as client:
        job = submit(client, "canary-1", shards=5, seconds=0.3)
        seen = list(client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=90))
    states = [j.state for j in seen]
    assert states[-1] == common_pb2.JOB_STATE_SUCCEEDED, seen[-1].error
    assert common_pb2.JOB_STATE_RUNNING in states
    steps = [j.progress.step for j in seen if j.state == common_pb2.JOB_STATE_RUNNING]
    assert steps == sorted(steps) and len(set(steps)) >= 3, "progress streamed step by step"
    final = seen[-1]
    assert final.progress.fraction == 1.0 and final.attempts == 1
    (manifest,) = final.outputs
    assert manifest.key == f"runs/{job.id}/MANIFEST.json"
    store = ObjectStore(kiln_env)
    store.get_bytes(store.stat(manifest.key))  # verifies sha256
    assert store.stat(manifest.key).sha256 == manifest.sha256
    assert shard_attempts(store, job.id) == [1] * 5


def test_kill_9_worker_mid_job_redelivers_and_writes_once(
    grpc_server, worker, fast_redelivery
) -> None:
    server = grpc_server("trainer", fast_redelivery)
    first = worker("trainer")
    with KilnClient("trainer", target=server.target) as client:
        job = submit(client, "canary-kill", shards=10, seconds=0.4)

        def progress() -> int:
            return client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id)).progress.step

        wait_for(lambda: progress() >= 3, 60, "three shards")
        os.killpg(os.getpgid(first), signal.SIGKILL)  # the whole worker: main and pool child
        written_before = progress()
        worker("trainer")
        final = wait_for(
            lambda: (
                (j := client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id))).state
                == common_pb2.JOB_STATE_SUCCEEDED
                and j
            ),
            90,
            "redelivery",
        )
    assert final.attempts == 2
    attempts = shard_attempts(ObjectStore(fast_redelivery), job.id)
    assert len(attempts) == 10
    # Shards the first delivery finished are reused, never rewritten; the rest are new.
    assert attempts == sorted(attempts) and attempts.count(1) >= written_before >= 3
    assert final.summary["reused"] == attempts.count(1)


def test_kill_9_pool_child_requeues_on_same_worker(grpc_server, worker, kiln_env) -> None:
    server = grpc_server("prober", kiln_env)
    main = worker("prober")
    with KilnClient("prober", target=server.target) as client:
        job = submit(client, "canary-child", shards=8, seconds=0.3)
        wait_for(
            lambda: client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id)).progress.step >= 2,
            60,
            "two shards",
        )
        (child,) = wait_for(lambda: children(main), 10, "the pool child")
        os.kill(child, signal.SIGKILL)
        final = wait_for(
            lambda: (
                (j := client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id))).state
                == common_pb2.JOB_STATE_SUCCEEDED
                and j
            ),
            60,
            "requeue",
        )
    assert final.attempts == 2
    attempts = shard_attempts(ObjectStore(kiln_env), job.id)
    assert attempts[0] == 1 and attempts[-1] == 2 and attempts == sorted(attempts)


def test_cancel_running_job(grpc_server, worker, kiln_env) -> None:
    server = grpc_server("toolsynth", kiln_env)
    worker("toolsynth")
    with KilnClient("toolsynth", target=server.target) as client:
        job = submit(client, "canary-cancel", shards=50, seconds=0.2)
        wait_for(
            lambda: (
                client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id)).state
                == common_pb2.JOB_STATE_RUNNING
            ),
            60,
            "running",
        )
        client.jobs.CancelJob(common_pb2.CancelJobRequest(job_id=job.id))
        final = wait_for(
            lambda: (
                (j := client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id))).state
                == common_pb2.JOB_STATE_CANCELLED
                and j
            ),
            30,
            "cancel",
        )
    assert final.progress.step < 50
    assert not ObjectStore(kiln_env).is_committed(f"runs/{job.id}")
