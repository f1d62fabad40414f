"""The judge over real gRPC: a tiny model served by a real inference server judges (its
verdicts are mostly unparseable, which the reports must count), an evaluation job and a crowd
rejection-sampling job run on a worker process and commit their outputs to S3, and the Redis
response cache makes a repeated call free."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from kiln.common.v1 import common_pb2
from kiln.inference.v1 import inference_pb2
from kiln.judge.v1 import judge_pb2 as pb
from services.common.clients import KilnClient
from services.common.objectstore import ObjectStore
from services.common.protobuf import ref_to_pb
from services.common.settings import Settings, get_settings
from tests.datasets import JUDGE_DIR

DATA = JUDGE_DIR
VERDICTS = {"A", "B", "tie", "unparseable"}


def config(strategy: str = "vanilla", k: int | None = None, **parameters) -> pb.JudgeConfig:
    out = pb.JudgeConfig(model="tiny", strategy=strategy, max_tokens=6)
    if k is not None:
        out.k = k
    params = struct_pb2.Struct()
    params.update(parameters)
    out.parameters.CopyFrom(params)
    return out


@pytest.fixture
def stack(grpc_server, kiln_env: Settings, tiny_model: Path, monkeypatch):
    inference = grpc_server("inference", kiln_env)
    monkeypatch.setenv("KILN_INFERENCE_PORT", str(inference.port))
    get_settings.cache_clear()
    settings = get_settings()
    with KilnClient("inference", target=inference.target) as client:
        for name in ("tiny", "tiny-b"):
            client.stub.LoadModel(
                inference_pb2.LoadModelRequest(name=name, local_path=str(tiny_model))
            )
    judge = grpc_server("judge", settings)
    with KilnClient("judge", target=judge.target) as client:
        yield client, settings


def test_judge_both_orders_and_the_cache(stack) -> None:
    client, _ = stack
    request = pb.JudgeRequest(
        instruction="Name a prime number.", response_a="7", response_b="8", config=config()
    )
    first = client.stub.Judge(request)
    assert first.verdict in VERDICTS
    assert first.forward.winner in VERDICTS and first.swapped.winner in VERDICTS
    assert first.forward.text and first.swapped.text
    assert (first.usage.calls, first.usage.cached_calls) == (2, 0)
    again = client.stub.Judge(request)
    assert (again.usage.calls, again.usage.cached_calls) == (0, 2)
    assert again.forward.text == first.forward.text and again.verdict == first.verdict

    cce = client.stub.Judge(
        pb.JudgeRequest(
            instruction="Name a prime number.",
            response_a="7",
            response_b="8",
            config=config("cce", k=2, crowd_size=2, crowd_max_tokens=6),
        )
    )
    stages = cce.usage_by_stage
    assert stages["crowd"]["calls"] == 2
    # with no parseable crowd judgment to keep, the final prompt is the vanilla prompt, which
    # the cache already answered above
    assert stages["judge"]["calls"] + stages["judge"]["cached_calls"] == 2
    assert 0 < stages["crowd_judgment"]["calls"] <= 4


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.JudgeRequest(instruction="q", response_a="a", response_b="b"), "config.model"),
        (
            pb.JudgeRequest(instruction="q", response_a="", response_b="b", config=config()),
            "response_a",
        ),
        (
            pb.JudgeRequest(
                instruction="q", response_a="a", response_b="b", config=config("best-of")
            ),
            "config.strategy",
        ),
        (
            pb.JudgeRequest(
                instruction="q", response_a="a", response_b="b", config=config("cce", crowd=3)
            ),
            "config.parameters.crowd",
        ),
    ],
)
def test_bad_judge_request_is_invalid_argument(stack, request_, field) -> None:
    client, _ = stack
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Judge(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


def upload_llmbar(settings: Settings):
    store = ObjectStore(settings)
    data = (DATA / "llmbar_natural.json").read_bytes()
    return store, ref_to_pb(store.put_bytes("datasets/llmbar/v1/natural.json", data))


def test_evaluation_job_and_estimate(stack, worker) -> None:
    client, settings = stack
    worker("judge")
    store, dataset = upload_llmbar(settings)
    cce = pb.EvaluationRequest(dataset=dataset, config=config("cce", k=2, crowd_size=2), limit=4)
    estimate = client.stub.EstimateEvaluation(cce)
    assert estimate.items == 4
    # judge 4 x 2 orders, crowd 4 instructions x 2, crowd judgments 2 sides x 2 x 4 items
    assert dict(estimate.calls_by_stage) == {"judge": 8, "crowd": 8, "crowd_judgment": 16}
    cce.config.max_calls = 10
    assert not client.stub.EstimateEvaluation(cce).within_budget
    with pytest.raises(grpc.RpcError) as err:
        client.stub.SubmitEvaluation(cce)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    job = client.stub.SubmitEvaluation(
        pb.EvaluationRequest(request_id="eval-1", dataset=dataset, config=config(), limit=4)
    )
    *_, final = client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=300)
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
    summary = final.summary
    assert summary["items"] == 4 and summary["labeled"] == 4
    assert summary["usage"]["calls"] + summary["usage"]["cached_calls"] == 8
    assert sum(summary["verdicts"].values()) == 4
    parsed = 4 - summary["verdicts"]["unparseable"]
    assert summary["parse_rate"] == parsed / 4 and "order_agreement" in summary
    # a tiny random judge rarely states a verdict: accuracy is undefined until one parses
    assert summary["accuracy"] is None if parsed == 0 else 0.0 <= summary["accuracy"] <= 1.0
    names = {o.key.rsplit("/", 1)[1] for o in final.outputs}
    assert names == {"MANIFEST.json", "judgments.jsonl", "report.json"}
    rows = store.get_jsonl(f"runs/{job.id}/judgments.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert all(r["forward"]["text"] and r["swapped"]["text"] for r in rows)
    saved = json.loads(store.get_bytes(f"runs/{job.id}/report.json"))
    assert saved["verdicts"] == {k: int(v) for k, v in summary["verdicts"].items()}
    assert saved["accuracy"] == pytest.approx(summary["accuracy"])


def test_crowd_sampling_job_writes_an_sft_set(stack, worker) -> None:
    client, settings = stack
    worker("judge")
    store = ObjectStore(settings)
    prompts = store.put_bytes(
        "datasets/prompts/v1/p.jsonl",
        b'{"prompt": "Say hello."}\n{"prompt": "Count to three."}\n',
    )
    job = client.stub.SubmitCrowdSampling(
        pb.CrowdSamplingRequest(
            request_id="crowd-1",
            prompts=ref_to_pb(prompts),
            policies=["tiny", "tiny-b"],
            config=config("cce", k=2, crowd_size=2, crowd_max_tokens=6),
            dataset_name="hello-sft",
            max_tokens=6,
            temperature=0.9,
        )
    )
    *_, final = client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=300)
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
    prefix = f"datasets/hello-sft/{job.id}"
    assert store.is_committed(prefix) and final.summary["rows"] == 2
    sft = store.get_jsonl(f"{prefix}/data.jsonl")
    selections = store.get_jsonl(f"{prefix}/selections.jsonl")
    for row, sel in zip(sft, selections, strict=True):
        user, assistant = row["messages"]
        assert user == {"role": "user", "content": sel["prompt"]}
        best = sel["responses"][sel["best"]]
        assert assistant == {"role": "assistant", "content": best["text"]}
        assert best["score"] == max(r["score"] for r in sel["responses"])
        assert sum(r["score"] for r in sel["responses"]) <= 1.0  # one match of two policies


def test_bad_crowd_sampling_request(stack) -> None:
    client, _ = stack
    with pytest.raises(grpc.RpcError) as err:
        client.stub.SubmitCrowdSampling(
            pb.CrowdSamplingRequest(
                prompts=common_pb2.ObjectRef(key="datasets/x"), policies=["tiny"], config=config()
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("policies")
