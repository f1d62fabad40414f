"""The prober over real gRPC: its remote backend reaches a real inference server; a probe
dataset job runs on a worker process and writes its report to S3."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from kiln.common.v1 import common_pb2
from kiln.inference.v1 import inference_pb2
from kiln.prober.v1 import prober_pb2 as pb
from services.common.clients import KilnClient
from services.common.objectstore import ObjectStore
from services.common.protobuf import ref_to_pb
from services.common.settings import Settings, get_settings

ITEM = pb.ProbeItem(
    question="Which is larger?",
    options=["12", "30"],
    reasoning="Compare them.\n30 is more than 12.",
    gold="B",
)


@pytest.fixture
def stack(grpc_server, kiln_env: Settings, tiny_model: Path, monkeypatch):
    inference = grpc_server("inference", kiln_env)
    monkeypatch.setenv("KILN_INFERENCE_PORT", str(inference.port))
    get_settings.cache_clear()
    settings = get_settings()
    with KilnClient("inference", target=inference.target) as client:
        client.stub.LoadModel(
            inference_pb2.LoadModelRequest(name="tiny", local_path=str(tiny_model))
        )
    prober = grpc_server("prober", settings)
    with KilnClient("prober", target=prober.target) as client:
        yield client, settings


def test_probe_and_select(stack) -> None:
    client, _ = stack
    reply = client.stub.Probe(pb.ProbeRequest(request_id="p1", model="tiny", item=ITEM))
    t = reply.trajectory
    assert [s.step for s in t.steps] == [0, 1, 2]
    assert all(abs(sum(s.option_probs.values()) - 1) < 1e-5 for s in t.steps)
    assert t.final_answer in ("A", "B") and t.graded
    assert t.correct == (t.final_answer == "B")
    assert t.early_answer == (t.steps[0].answer == t.final_answer)
    chains = [
        "Compare them.\n30 is more than 12.",
        "12 is small.\nSo 12.",
        "Think.\nHmm.\nStill thinking.",
    ]
    selected = client.stub.Select(
        pb.SelectRequest(
            request_id="s1",
            model="tiny",
            question="Which is larger?",
            options=["12", "30"],
            candidates=chains,
        )
    )
    assert sorted(r.index for r in selected.ranked) == [0, 1, 2]
    scores = [r.score for r in selected.ranked]
    assert scores == sorted(scores, reverse=True)
    assert len(selected.trajectories) == 3 and selected.majority_answer in ("A", "B")


@pytest.mark.parametrize(
    "request_,field",
    [
        (pb.ProbeRequest(model="tiny", item=pb.ProbeItem(reasoning="x")), "item.question"),
        (pb.ProbeRequest(model="tiny", item=pb.ProbeItem(question="q")), "item.reasoning"),
        (
            pb.ProbeRequest(
                model="tiny",
                item=pb.ProbeItem(question="q", reasoning="r", options=["a"], gold="Z"),
            ),
            "item.gold",
        ),
        (pb.ProbeRequest(item=ITEM), "model"),
        (pb.ProbeRequest(model="tiny", item=ITEM, step_mode="words"), "step_mode"),
    ],
)
def test_bad_probe_is_invalid_argument(stack, request_, field) -> None:
    client, _ = stack
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Probe(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


def test_bad_select_is_invalid_argument(stack) -> None:
    client, _ = stack
    for request_, field in (
        (pb.SelectRequest(model="tiny", question="q", candidates=[]), "candidates"),
        (pb.SelectRequest(model="tiny", question="q", candidates=["a"], scorer="vibes"), "scorer"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            client.stub.Select(request_)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(field)


def test_probe_dataset_job(stack, worker) -> None:
    client, settings = stack
    worker("prober")
    rows = [
        {
            "question": "Which is larger?",
            "options": ["12", "30"],
            "reasoning": "Compare.\n30 > 12.",
            "gold": "B",
        },
        {"question": "Pick one", "options": ["x", "y", "z"], "reasoning": "Only one step."},
    ]
    store = ObjectStore(settings)
    dataset = store.put_bytes(
        "datasets/probe/v1/items.jsonl", "\n".join(json.dumps(r) for r in rows).encode()
    )
    job = client.stub.SubmitProbe(
        pb.SubmitProbeRequest(request_id="job1", model="tiny", dataset=ref_to_pb(dataset))
    )
    *_, final = client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=120)
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
    assert final.progress.step == 2 and final.summary["items"] == 2
    keys = {o.key.rsplit("/", 1)[1] for o in final.outputs}
    assert keys == {"MANIFEST.json", "trajectories.jsonl", "report.json", "report.html"}
    html = store.get_bytes(f"runs/{job.id}/report.html").decode()
    assert html.count("<svg") == 2 and "Which is larger?" in html
    lines = store.get_bytes(f"runs/{job.id}/trajectories.jsonl").decode().splitlines()
    assert [len(json.loads(x)["steps"]) for x in lines] == [3, 2]
