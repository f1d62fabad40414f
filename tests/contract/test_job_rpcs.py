"""The job RPC contract of judge, toolsynth, trainer and prober, against in-process servers
(real Redis and S3, no worker): every Submit* answers a QUEUED Job of its service and kind,
records the payload its worker will get (inputs with their stored size and sha256), is
idempotent per request_id, refuses a reused request_id with another body and a missing
input by field, and a queued job cancels at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from kiln.common.v1 import common_pb2
from kiln.judge.v1 import judge_pb2
from kiln.prober.v1 import prober_pb2
from kiln.toolsynth.v1 import toolsynth_pb2
from kiln.trainer.v1 import trainer_pb2
from services.common.clients import KilnClient
from services.common.jobs import JobManager
from services.common.objectstore import ObjectStore
from services.common.settings import Settings
from tests.datasets import JUDGE_DIR
from tests.toolsynth_fixtures import TOOLS

PAIRS = (JUDGE_DIR / "llmbar_natural.json").read_bytes()
TOOLS_JSONL = "\n".join(json.dumps(t.to_openai()) for t in TOOLS).encode()
SFT_ROWS = b'{"prompt": "2+2=", "completion": "4"}\n{"prompt": "3+3=", "completion": "6"}\n'
PROBE_ROWS = b'{"question": "Pick", "options": ["x", "y"], "reasoning": "One step."}\n'
PROMPTS = b'{"prompt": "Name a color."}\n'


@dataclass(frozen=True)
class Submit:
    service: str
    rpc: str
    kind: str
    input_field: str  # the request field holding the input ObjectRef
    data: bytes  # the input object's bytes
    request: Callable[[common_pb2.ObjectRef, Path], Any]
    payload_input: Callable[[dict], dict]  # where the payload keeps the input ref


SUBMITS = [
    Submit(
        "judge",
        "SubmitEvaluation",
        "evaluate",
        "dataset",
        PAIRS,
        lambda ref, _: judge_pb2.EvaluationRequest(
            dataset=ref, config=judge_pb2.JudgeConfig(model="tiny", strategy="vanilla"), limit=2
        ),
        lambda payload: payload["dataset"],
    ),
    Submit(
        "judge",
        "SubmitCrowdSampling",
        "crowd_sampling",
        "prompts",
        PROMPTS,
        lambda ref, _: judge_pb2.CrowdSamplingRequest(
            prompts=ref, policies=["a", "b"], config=judge_pb2.JudgeConfig(model="tiny")
        ),
        lambda payload: payload["prompts"],
    ),
    Submit(
        "toolsynth",
        "SubmitSynthesis",
        "synthesize",
        "tools",
        TOOLS_JSONL,
        lambda ref, _: toolsynth_pb2.SynthesisRequest(tools=ref, count=2, model="tiny"),
        lambda payload: payload["tools"],
    ),
    Submit(
        "trainer",
        "SubmitTraining",
        "train",
        "datasets[0]",
        SFT_ROWS,
        lambda ref, model: trainer_pb2.TrainingRequest(
            run_name="contract", objective="sft", base_model=str(model), datasets=[ref]
        ),
        lambda payload: payload["datasets"][0],
    ),
    Submit(
        "trainer",
        "PrepareData",
        "prepare",
        "dataset",
        SFT_ROWS,
        lambda ref, _: trainer_pb2.PrepareDataRequest(method="tata", model="tiny", dataset=ref),
        lambda payload: payload["dataset"],
    ),
    Submit(
        "prober",
        "SubmitProbe",
        "probe",
        "dataset",
        PROBE_ROWS,
        lambda ref, _: prober_pb2.SubmitProbeRequest(model="tiny", dataset=ref),
        lambda payload: payload["dataset"],
    ),
]


def _with_input(message: Any, field: str, ref: common_pb2.ObjectRef) -> Any:
    name = field.split("[")[0]
    target = getattr(message, name)
    if field.endswith("]"):
        del target[:]
        target.append(ref)
    else:
        target.CopyFrom(ref)
    return message


@pytest.mark.parametrize("submit", SUBMITS, ids=[f"{s.service}.{s.rpc}" for s in SUBMITS])
def test_submit_queues_a_job_with_its_checked_inputs(
    grpc_server, kiln_env: Settings, tiny_model: Path, submit: Submit
) -> None:
    server = grpc_server(submit.service, kiln_env)
    store = ObjectStore(kiln_env)
    stored = store.put_bytes(f"datasets/contract/v1/{submit.kind}", submit.data)
    copy = store.put_bytes(f"datasets/contract/v2/{submit.kind}", submit.data)
    ref = common_pb2.ObjectRef(bucket=stored.bucket, key=stored.key)  # no sha256 or size
    with KilnClient(submit.service, target=server.target) as client:
        call = getattr(client.stub, submit.rpc)
        request = submit.request(ref, tiny_model)
        request.request_id = f"contract-{submit.kind}"
        job = call(request)
        assert (job.service, job.kind, job.request_id) == (
            submit.service,
            submit.kind,
            request.request_id,
        )
        assert job.state == common_pb2.JOB_STATE_QUEUED and job.attempts == 0
        assert call(request).id == job.id, "one job per request_id"

        record = JobManager(submit.service, kiln_env).get(job.id)
        assert submit.payload_input(record.payload) == stored.to_dict(), "size and sha256 filled"

        other = submit.request(ref, tiny_model)
        other.request_id = request.request_id
        _with_input(other, submit.input_field, common_pb2.ObjectRef(key=copy.key))
        with pytest.raises(grpc.RpcError) as reused:
            call(other)
        missing = submit.request(ref, tiny_model)
        missing.request_id = "contract-missing"
        _with_input(missing, submit.input_field, common_pb2.ObjectRef(key="datasets/x/1/none"))
        with pytest.raises(grpc.RpcError) as gone:
            call(missing)

        cancelled = client.jobs.CancelJob(common_pb2.CancelJobRequest(job_id=job.id))
        listed = client.jobs.ListJobs(common_pb2.ListJobsRequest())
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reused.value.details().startswith("request_id: ")
    assert gone.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert gone.value.details() == f"{submit.input_field}: no object at 'datasets/x/1/none'"
    assert cancelled.state == common_pb2.JOB_STATE_CANCELLED
    assert (cancelled.error_code, cancelled.error) == ("CANCELLED", "cancelled before it started")
    assert [j.id for j in listed.jobs] == [job.id]
