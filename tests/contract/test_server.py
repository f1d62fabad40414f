"""Contract tests against in-process aio servers on free ports."""

from __future__ import annotations

import dataclasses
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kiln.common.v1 import common_pb2, common_pb2_grpc
from kiln.judge.v1 import judge_pb2, judge_pb2_grpc
from kiln.toolsynth.v1 import toolsynth_pb2, toolsynth_pb2_grpc
from services.common.clients import SERVICE_NAMES, KilnClient, _CallDefaults, _CallDetails
from services.common.settings import SERVICES, Settings

TOKEN = "s3cret-token"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, auth_token=TOKEN, s3_retries=1)


def test_every_service_serving_with_reflection(grpc_server, settings: Settings) -> None:
    for service in SERVICES:
        server = grpc_server(service, settings)
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in (SERVICE_NAMES[service], "kiln.common.v1.Jobs", ""):
                reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = {s.name for r in replies for s in r.list_services_response.service}
        assert {SERVICE_NAMES[service], "kiln.common.v1.Jobs", "grpc.health.v1.Health"} <= names


def test_token_required_except_health(grpc_server, settings: Settings) -> None:
    server = grpc_server("judge", settings)
    request = common_pb2.GetJobRequest(job_id="nope")
    for token in ("", "wrong"):
        with KilnClient("judge", target=server.target, settings=settings, token=token) as c:
            with pytest.raises(grpc.RpcError) as err:
                c.jobs.GetJob(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert c.health_status() == "SERVING"
    with KilnClient("judge", target=server.target, settings=settings) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.jobs.GetJob(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # authenticated, reaches Redis


def test_invalid_input_becomes_invalid_argument_naming_field(grpc_server, settings) -> None:
    server = grpc_server("trainer", settings)
    with KilnClient("trainer", target=server.target, settings=settings) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.jobs.SubmitCanary(
                common_pb2.SubmitCanaryRequest(request_id="r1", shards=0), timeout=5
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("shards: must be in 1..1000")
    assert ("kiln-error-field", "shards") in tuple(err.value.trailing_metadata())


def test_error_field_trailer_is_escaped_ascii(grpc_server, settings) -> None:
    server = grpc_server("toolsynth", settings)
    with KilnClient("toolsynth", target=server.target, settings=settings) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.SubmitSynthesis(
                toolsynth_pb2.SynthesisRequest(
                    request_id="r1", count=1, dialog_mix={"\x00\u00e9": 1.0}
                ),
                timeout=5,
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailer = dict(err.value.trailing_metadata())["kiln-error-field"]
    assert trailer == "dialog_mix.\\x00\\xe9"


def test_unbuilt_rpc_is_unimplemented(grpc_server, settings) -> None:
    """An RPC a servicer does not override answers UNIMPLEMENTED (the generated base)."""

    def registrar(server, settings, jobs):
        toolsynth_pb2_grpc.add_ToolSynthServicer_to_server(
            toolsynth_pb2_grpc.ToolSynthServicer(), server
        )
        return [SERVICE_NAMES["toolsynth"]]

    server = grpc_server("toolsynth", settings, registrar)
    with KilnClient("toolsynth", target=server.target, settings=settings) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.SubmitSynthesis(toolsynth_pb2.SynthesisRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unexpected_error_is_internal_without_internals(grpc_server, settings) -> None:
    class Exploding(judge_pb2_grpc.JudgeServicer):
        async def Judge(self, request, context):
            raise RuntimeError("database password is hunter2")

    def registrar(server, settings, jobs):
        judge_pb2_grpc.add_JudgeServicer_to_server(Exploding(), server)
        return [SERVICE_NAMES["judge"]]

    server = grpc_server("judge", settings, registrar)
    with KilnClient("judge", target=server.target, settings=settings) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.Judge(judge_pb2.JudgeRequest(request_id="x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in err.value.details()
    assert "RuntimeError" not in err.value.details()


def test_deadlines_cap_unary_calls_and_never_streams(grpc_server, settings: Settings) -> None:
    """An explicit deadline ends a watch; the default deadline applies to unary calls only,
    so a watch (or a long Generate stream) outlives it."""
    server = grpc_server("prober", settings)
    with KilnClient("prober", target=server.target, settings=settings) as client:
        job = client.jobs.SubmitCanary(
            common_pb2.SubmitCanaryRequest(request_id="deadline", shards=1), timeout=5
        )
        with pytest.raises(grpc.RpcError) as err:
            list(client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=0.5))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with KilnClient("prober", target=server.target, settings=settings, deadline_s=0.3) as client:
        watch = client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job.id))
        assert next(watch).id == job.id
        time.sleep(1.0)  # over three default deadlines: the watch is still open
        assert watch.is_active()
        watch.cancel()
        with pytest.raises(grpc.RpcError) as err:
            list(watch)
        assert err.value.code() == grpc.StatusCode.CANCELLED
    defaults = _CallDefaults("", deadline_s=0.3)
    details = _CallDetails("/kiln.common.v1.Jobs/GetJob", None, None, None, None, None)
    assert defaults._details(details, unary=True).timeout == 0.3
    assert defaults._details(details, unary=False).timeout is None
    assert defaults._details(dataclasses.replace(details, timeout=7.0), unary=True).timeout == 7.0


def test_submit_is_idempotent_per_request_id(grpc_server, settings: Settings) -> None:
    server = grpc_server("toolsynth", settings)
    with KilnClient("toolsynth", target=server.target, settings=settings) as client:
        jobs = common_pb2_grpc.JobsStub(client.channel)
        first = jobs.SubmitCanary(common_pb2.SubmitCanaryRequest(request_id="same", shards=2))
        again = jobs.SubmitCanary(common_pb2.SubmitCanaryRequest(request_id="same", shards=2))
        assert first.id == again.id
        assert first.state == common_pb2.JOB_STATE_QUEUED
        with pytest.raises(grpc.RpcError) as err:
            jobs.SubmitCanary(common_pb2.SubmitCanaryRequest(request_id="same", shards=3))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "request_id" in err.value.details()
        listed = jobs.ListJobs(common_pb2.ListJobsRequest())
        assert [j.id for j in listed.jobs] == [first.id]
        cancelled = jobs.CancelJob(common_pb2.CancelJobRequest(job_id=first.id))
        assert cancelled.state == common_pb2.JOB_STATE_CANCELLED
