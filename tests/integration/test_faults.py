"""Faults against real processes on loopback: Redis restarted under a running job, and the S3
endpoint gone under a job and an RPC. Loops are bounded by wait_for's timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kiln.common.v1 import common_pb2, common_pb2_grpc
from kiln.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.cli.embedded import free_port, start_redis, start_s3, stop_pid
from services.common.clients import KilnClient
from services.common.objectstore import ObjectStore
from services.common.settings import Settings, get_settings
from tests.integration.test_jobs import submit, wait_for

FINAL = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED)


def get_job(client: KilnClient, job_id: str) -> common_pb2.Job:
    return client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job_id), timeout=10)


def ended(client: KilnClient, job_id: str) -> common_pb2.Job | None:
    try:
        job = get_job(client, job_id)
    except grpc.RpcError:
        return None
    return job if job.state in FINAL else None


@pytest.fixture
def own_redis(kiln_env: Settings, tmp_path: Path, monkeypatch) -> Iterator[dict]:
    """A Redis of this test alone (append-only file on), so it can be stopped and restarted
    on the same port and data directory."""
    port = free_port()
    proc, _ = start_redis(port, tmp_path / "redis-data", tmp_path / "logs", persist=True)
    monkeypatch.setenv("KILN_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    state = {"pid": proc.pid, "port": port, "dir": tmp_path}
    yield state
    stop_pid(state["pid"], grace=3)


def test_redis_restart_mid_job_reconnects_and_the_job_finishes(
    grpc_server, worker, own_redis
) -> None:
    settings = get_settings()
    server = grpc_server("judge", settings)
    worker("judge")
    with KilnClient("judge", target=server.target, settings=settings) as client:
        job = submit(client, "redis-restart", shards=8, seconds=0.5)
        wait_for(lambda: get_job(client, job.id).progress.step >= 2, 60, "two shards")

        stop_pid(own_redis["pid"], grace=5)  # SIGTERM: Redis flushes its append-only file
        # the server's own answer (KilnClient would retry UNAVAILABLE): after its Redis
        # retries with backoff, UNAVAILABLE naming Redis
        with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as down:
            common_pb2_grpc.JobsStub(channel).GetJob(
                common_pb2.GetJobRequest(job_id=job.id), timeout=30
            )
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Redis" in down.value.details()
        time.sleep(2)
        proc, _ = start_redis(
            own_redis["port"], own_redis["dir"] / "redis-data", own_redis["dir"] / "logs"
        )
        own_redis["pid"] = proc.pid

        final = wait_for(lambda: ended(client, job.id), 120, "the job to end")
        assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
        assert final.progress.step == 8
        refs = ObjectStore(settings).manifest_refs(f"runs/{job.id}")
        assert len(refs) == 8  # every shard once, none lost or duplicated

        # the server and the worker both reconnected: a new job runs end to end
        again = submit(client, "after-restart", shards=2, seconds=0.1)
        final = wait_for(lambda: ended(client, again.id), 60, "a job after the restart")
        assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error


@pytest.fixture
def own_s3(kiln_env: Settings, tmp_path: Path, monkeypatch) -> Iterator[dict]:
    port = free_port()
    proc, _, _ = start_s3(port, tmp_path / "s3-data", tmp_path / "logs")
    monkeypatch.setenv("KILN_S3_ENDPOINT", f"127.0.0.1:{port}")
    get_settings.cache_clear()
    ObjectStore(get_settings()).ensure_bucket()
    state = {"pid": proc.pid}
    yield state
    stop_pid(state["pid"], grace=3)


def test_s3_down_fails_the_job_clearly_and_rpcs_are_unavailable(
    grpc_server, worker, own_s3
) -> None:
    settings = get_settings()
    server = grpc_server("trainer", settings)
    worker("trainer")
    with KilnClient("trainer", target=server.target, settings=settings) as client:
        job = submit(client, "s3-down", shards=10, seconds=0.4)
        wait_for(lambda: get_job(client, job.id).progress.step >= 2, 60, "two shards")
        stop_pid(own_s3["pid"], grace=3)

        final = wait_for(lambda: ended(client, job.id), 120, "the job to fail")
        assert final.state == common_pb2.JOB_STATE_FAILED
        assert "object store" in final.error and "unreachable after" in final.error, final.error
        assert not final.outputs  # no manifest was committed

    # the server's own answer (KilnClient would retry UNAVAILABLE)
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as err:
        trainer_pb2_grpc.TrainerStub(channel).ListCheckpoints(
            trainer_pb2.ListCheckpointsRequest(run_name="any"), timeout=60
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "object store" in err.value.details()
