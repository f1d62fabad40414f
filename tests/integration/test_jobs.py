"""Jobs end to end: gRPC server -> Redis queue -> Celery worker process -> S3."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kiln.common.v1 import common_pb2
from services.cli.embedded import pid_alive
from services.common.clients import KilnClient
from services.common.errors import Cancelled, InvalidInput
from services.common.jobs import JobManager, JobState, JobStore, redis_client, this_process
from services.common.jobs.worker import job_error
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


def with_env(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def fast_recovery(kiln_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A job without a heartbeat for 3 s is lost (the server checks every second); Redis'
    visibility timeout stays at its default (hours), so only kiln's recovery can requeue."""
    return with_env(monkeypatch, KILN_JOB_LOST_AFTER_S="3", KILN_JOB_HEARTBEAT_S="0.5")


def submit(
    client: KilnClient, request_id: str, shards: int, seconds: float, allocate_mb: int = 0
) -> common_pb2.Job:
    return client.jobs.SubmitCanary(
        common_pb2.SubmitCanaryRequest(
            request_id=request_id, shards=shards, shard_seconds=seconds, allocate_mb=allocate_mb
        )
    )


def get(client: KilnClient, job_id: str) -> common_pb2.Job:
    return client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job_id))


def wait_state(client: KilnClient, job_id: str, state: int, timeout: float) -> common_pb2.Job:
    return wait_for(
        lambda: (j := get(client, job_id)).state == state and j,
        timeout,
        common_pb2.JobState.Name(state),
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


def test_kill_9_worker_mid_job_is_requeued_by_its_server_and_writes_once(
    grpc_server, worker, fast_recovery
) -> None:
    server = grpc_server("trainer", fast_recovery)
    first = worker("trainer")
    with KilnClient("trainer", target=server.target) as client:
        job = submit(client, "canary-kill", shards=10, seconds=0.4)
        wait_for(lambda: get(client, job.id).progress.step >= 3, 60, "three shards")
        os.killpg(os.getpgid(first), signal.SIGKILL)  # the whole worker: main and pool child
        written_before = get(client, job.id).progress.step
        requeued = wait_state(client, job.id, common_pb2.JOB_STATE_QUEUED, 30)
        assert requeued.error.startswith("requeued after attempt 1: its worker ")
        assert "no heartbeat for" in requeued.error
        worker("trainer")
        final = wait_state(client, job.id, common_pb2.JOB_STATE_SUCCEEDED, 90)
    assert final.attempts == 2 and final.error == ""
    attempts = shard_attempts(ObjectStore(fast_recovery), job.id)
    assert len(attempts) == 10
    # Shards the first delivery finished are reused, never rewritten; the rest are new.
    assert attempts == sorted(attempts) and attempts.count(1) >= written_before >= 3
    assert final.summary["reused"] == attempts.count(1)


def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(
    grpc_server, worker, kiln_env, monkeypatch
) -> None:
    settings = with_env(monkeypatch, KILN_JOB_MAX_ATTEMPTS="2")
    server = grpc_server("prober", settings)
    main = worker("prober")
    with KilnClient("prober", target=server.target) as client:
        job = submit(client, "canary-dies", shards=20, seconds=0.3)
        for attempt in (1, 2):
            wait_for(
                lambda a=attempt: (j := get(client, job.id)).attempts == a and j.progress.step,
                60,
                f"attempt {attempt} under way",
            )
            (child,) = wait_for(lambda: children(main), 10, "the pool child")
            os.kill(child, signal.SIGKILL)  # the worker requeues it at once: the next delivery
        final = wait_state(client, job.id, common_pb2.JOB_STATE_FAILED, 60)
    assert final.error_code == "ABORTED"
    # Whichever sees the second death first gives up: the worker, on the third delivery, or
    # the server's lost-job pass (a dead pid on this host), before any third delivery.
    by_worker = (3, "giving up: delivered 3 times (KILN_JOB_MAX_ATTEMPTS=2)")
    by_server = final.attempts == 2 and final.error.endswith("on attempt 2; giving up")
    assert (final.attempts, final.error) == by_worker or by_server, final


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


def test_cancel_stops_a_job_that_never_reports_and_the_worker_takes_the_next(
    grpc_server, worker, kiln_env, monkeypatch
) -> None:
    settings = with_env(monkeypatch, KILN_CANCEL_GRACE_S="1", KILN_JOB_HEARTBEAT_S="0.5")
    server = grpc_server("toolsynth", settings)
    main = worker("toolsynth")
    with KilnClient("toolsynth", target=server.target) as client:
        job = submit(client, "canary-stuck", shards=2, seconds=60)  # no report for 60 s
        wait_state(client, job.id, common_pb2.JOB_STATE_RUNNING, 60)
        client.jobs.CancelJob(common_pb2.CancelJobRequest(job_id=job.id))
        final = wait_state(client, job.id, common_pb2.JOB_STATE_CANCELLED, 10)
        assert final.error == "cancelled; stopped by force after 1 s"
        assert final.error_code == "CANCELLED"
        following = submit(client, "canary-after-stuck", shards=2, seconds=0)
        done = wait_state(client, following.id, common_pb2.JOB_STATE_SUCCEEDED, 60)
        assert done.attempts == 1
        time.sleep(1)
        assert get(client, job.id).state == common_pb2.JOB_STATE_CANCELLED, "ended once"
    assert pid_alive(main), "the worker's main process lives on"
    assert not ObjectStore(settings).is_committed(f"runs/{job.id}")


def test_a_job_past_its_memory_cap_fails_resource_exhausted_and_the_worker_lives(
    grpc_server, worker, kiln_env, monkeypatch
) -> None:
    settings = with_env(monkeypatch, KILN_WORKER_MEMORY_MB="1024")
    server = grpc_server("judge", settings)
    main = worker("judge")
    with KilnClient("judge", target=server.target) as client:
        job = submit(client, "canary-hog", shards=8, seconds=0, allocate_mb=256)
        failed = wait_state(client, job.id, common_pb2.JOB_STATE_FAILED, 60)
        following = submit(client, "canary-after-hog", shards=2, seconds=0)
        done = wait_state(client, following.id, common_pb2.JOB_STATE_SUCCEEDED, 60)
    assert failed.error_code == "RESOURCE_EXHAUSTED"
    assert failed.error == (
        "the job ran out of memory under its worker's cap of 1024 MiB (KILN_WORKER_MEMORY_MB)"
    )
    assert failed.attempts == 1 and 1 <= failed.progress.step < 4
    assert done.attempts == 1 and pid_alive(main)


def dead_pid() -> int:
    """A pid no process has: a child that already exited and was reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_claims_heartbeats_and_one_end_per_job(kiln_env) -> None:
    jobs = JobManager("prober", kiln_env)
    record = jobs.submit("canary", {"shards": 1, "shard_seconds": 0}, "claims")
    store = JobStore(redis_client(kiln_env))
    me = this_process()
    assert store.claim(record.id, me, lost_after_s=30) == 1
    assert store.claim(record.id, "elsewhere:1", lost_after_s=30) is None, "a live owner holds it"
    assert store.heartbeat(record.id, me) == (True, False)
    assert store.heartbeat(record.id, "elsewhere:1") == (False, False)
    jobs.cancel(record.id)
    assert store.heartbeat(record.id, me) == (True, True)
    assert store.get(record.id).state == JobState.RUNNING, "a running job ends where it runs"
    assert store.finish(record.id, JobState.CANCELLED, error=Cancelled("stopped")) is True
    assert store.finish(record.id, JobState.SUCCEEDED) is False, "the first end wins"
    assert store.get(record.id).state == JobState.CANCELLED
    assert store.claim(record.id, me, lost_after_s=30) is None, "an ended job never runs again"
    assert store.active("prober") == []


def test_an_owner_on_this_host_whose_process_died_is_taken_over_at_once(kiln_env) -> None:
    jobs = JobManager("prober", kiln_env)
    record = jobs.submit("canary", {"shards": 1, "shard_seconds": 0}, "takeover")
    store = JobStore(redis_client(kiln_env))
    host = this_process().rpartition(":")[0]
    assert store.claim(record.id, f"{host}:{dead_pid()}", lost_after_s=3600) == 1
    assert store.claim(record.id, this_process(), lost_after_s=3600) == 2


def test_recovery_requeues_a_silent_job_then_fails_or_cancels_it(kiln_env, monkeypatch) -> None:
    settings = with_env(monkeypatch, KILN_JOB_LOST_AFTER_S="5", KILN_JOB_MAX_ATTEMPTS="2")
    jobs = JobManager("prober", settings)
    store = jobs.store
    running, cancelled = (
        jobs.submit("canary", {"shards": n, "shard_seconds": 0}, f"silent-{n}") for n in (1, 2)
    )
    queued_messages = store.redis.llen("prober")
    for record in (running, cancelled):
        store.claim(record.id, "another-host:7", lost_after_s=5)
    jobs.cancel(cancelled.id)
    assert jobs.recover_lost() == [], "fresh heartbeats: nothing is lost"

    def silence(job_id: str, seconds: float) -> None:
        store.redis.hset(f"kiln:job:{job_id}", "heartbeat_at", time.time() - seconds)

    silence(running.id, 6)
    silence(cancelled.id, 6)
    recovered = dict(jobs.recover_lost())
    assert recovered == {running.id: JobState.QUEUED, cancelled.id: JobState.CANCELLED}
    requeued = store.get(running.id)
    assert requeued.owner == "" and requeued.attempts == 1 and requeued.error_code == ""
    assert requeued.error == (
        "requeued after attempt 1: its worker another-host:7 was lost (no heartbeat for 6 s)"
    )
    assert store.redis.llen("prober") == queued_messages + 1, "a new message for the job"
    assert store.get(cancelled.id).error.startswith("cancelled; its worker another-host:7")
    assert jobs.recover_lost() == [], "a QUEUED job is not lost"

    store.claim(running.id, "another-host:8", lost_after_s=5)
    silence(running.id, 60)
    assert jobs.recover_lost() == [(running.id, JobState.FAILED)]
    assert store.get(running.id).error == (
        "its worker another-host:8 was lost (no heartbeat for 60 s) on attempt 2; giving up"
    )
    assert store.get(running.id).error_code == "ABORTED"


def test_a_failed_job_records_a_code_and_a_message_without_internals(kiln_env) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    cases = {
        ValueError("/srv/secret/path: bad row"): (
            "INTERNAL",
            "the job failed unexpectedly (ValueError); the trainer worker's log has the traceback",
        ),
        InvalidInput("datasets[0]", "row 3: no completion"): (
            "INVALID_ARGUMENT",
            "datasets[0]: row 3: no completion",
        ),
        MemoryError(): (
            "RESOURCE_EXHAUSTED",
            "the job ran out of memory under its worker's cap of 0 MiB (KILN_WORKER_MEMORY_MB)",
        ),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 8 GB"): (
            "RESOURCE_EXHAUSTED",
            "the job ran out of memory under its worker's cap of 0 MiB (KILN_WORKER_MEMORY_MB)",
        ),
        SoftTimeLimitExceeded(): (
            "DEADLINE_EXCEEDED",
            "the job ran past its time limit of 21600 s (KILN_TASK_TIME_LIMIT_S)",
        ),
    }
    settings = kiln_env.model_copy(update={"worker_memory_mb": 0})
    for exc, expected in cases.items():
        error = job_error(exc, "trainer", settings)
        assert (error.code, str(error)) == expected
