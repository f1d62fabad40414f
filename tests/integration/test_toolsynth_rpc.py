"""ToolSynth over real gRPC: BFCL grading (Verify), synthesis jobs on a worker process that
commit verified datasets to S3 (template agents; LLM agents on a tiny model served by a real
inference server, replayed from the Redis cache), and clear errors for bad requests."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import struct_pb2

from kiln.common.v1 import common_pb2
from kiln.inference.v1 import inference_pb2
from kiln.toolsynth.v1 import toolsynth_pb2 as pb
from services.common.clients import KilnClient
from services.common.objectstore import ObjectStore
from services.common.protobuf import ref_to_pb
from services.common.settings import Settings, get_settings
from services.toolsynth.core.formats import from_toolace
from services.toolsynth.core.rules import dialog_errors
from tests.integration.test_jobs import wait_for
from tests.toolsynth_fixtures import TOOLS

FUNCTIONS = json.dumps(
    [
        {
            "name": "calculate_triangle_area",
            "parameters": {
                "type": "dict",
                "properties": {
                    "base": {"type": "integer"},
                    "height": {"type": "integer"},
                    "unit": {"type": "string"},
                },
                "required": ["base", "height"],
            },
        }
    ]
)
ANSWER = json.dumps(
    [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
)


@pytest.fixture
def client(grpc_server, kiln_env: Settings):
    server = grpc_server("toolsynth", kiln_env)
    with KilnClient("toolsynth", target=server.target) as c:
        yield c


@pytest.mark.parametrize(
    ("calls", "valid", "errors"),
    [
        ("[calculate_triangle_area(base=10, height=5)]", True, []),
        ('[{"calculate_triangle_area": {"base": 10, "height": 5, "unit": "Units"}}]', True, []),
        ("[calculate_triangle_area(base=10.0, height=5)]", False, ["type_error:simple"]),
        ("[calculate_triangle_area(base=10)]", False, ["missing_required"]),
        ("[]", False, ["wrong_count"]),
    ],
)
def test_verify(client, calls, valid, errors) -> None:
    for category in ("simple", "live_simple"):  # a live category grades as its non-live one
        reply = client.stub.Verify(
            pb.VerifyRequest(
                functions_json=FUNCTIONS, answer_json=ANSWER, calls=calls, category=category
            )
        )
        assert reply.valid == valid and list(reply.errors) == errors


def test_verify_takes_a_text_answer_on_irrelevance_and_relevance(client) -> None:
    refusal = "I cannot compute that with the functions I have."
    for category, calls, valid in [
        ("irrelevance", refusal, True),
        ("live_irrelevance", "[calculate_triangle_area(base=1, height=2)]", False),
        ("live_relevance", refusal, False),
        ("live_relevance", "[calculate_triangle_area(base=1, height=2)]", True),
    ]:
        request = pb.VerifyRequest(functions_json=FUNCTIONS, calls=calls, category=category)
        assert client.stub.Verify(request).valid == valid, category


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            pb.VerifyRequest(functions_json=FUNCTIONS, answer_json=ANSWER, category="easy"),
            "category",
        ),
        (
            pb.VerifyRequest(functions_json="{", answer_json=ANSWER, category="simple"),
            "functions_json",
        ),
        (pb.VerifyRequest(functions_json=FUNCTIONS, category="simple"), "answer_json"),
        (
            pb.VerifyRequest(
                functions_json=FUNCTIONS, answer_json=ANSWER, category="simple", calls="[f(1)]"
            ),
            "calls[0]",
        ),
    ],
)
def test_bad_verify_is_invalid_argument(client, request_, field) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Verify(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


def _parameters(values: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def _tools_ref(settings: Settings):
    lines = "\n".join(json.dumps(t.to_openai()) for t in TOOLS).encode()
    return ref_to_pb(ObjectStore(settings).put_bytes("datasets/tools/v1/tools.jsonl", lines))


def _finish(client, job) -> common_pb2.Job:
    *_, final = client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job.id), timeout=300)
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
    return final


def _shas(final: common_pb2.Job) -> dict[str, str]:
    return {o.key.rsplit("/", 1)[1]: o.sha256 for o in final.outputs}


def test_template_synthesis_job_is_byte_reproducible(client, kiln_env, worker) -> None:
    worker("toolsynth")
    request = pb.SynthesisRequest(
        request_id="synth-1",
        count=8,
        seed=3,
        dialog_mix={"single": 1, "parallel": 1, "dependent": 1, "non_tool": 1},
        tools=_tools_ref(kiln_env),
        dataset_name="restaurants",
        parameters=_parameters({"agents": {"agents": "template"}, "max_attempts": 4}),
        export_format="toolace",
    )
    final = _finish(client, client.stub.SubmitSynthesis(request))
    assert final.summary["dialogs"] == 8 and final.summary["calls"] == 0
    assert dict(final.summary["mix"]) == {t: 0.25 for t in request.dialog_mix}
    prefix = f"datasets/restaurants/{final.id}"
    store = ObjectStore(kiln_env)
    assert store.is_committed(prefix)
    assert set(_shas(final)) == {
        "MANIFEST.json",
        "data.jsonl",
        "dialogs.jsonl",
        "tools.jsonl",
        "stats.json",
        "rejected.jsonl",
    }
    rows = store.get_jsonl(f"{prefix}/data.jsonl")
    dialogs = [from_toolace(r) for r in rows]
    assert len(dialogs) == 8 and not any(dialog_errors(d) for d in dialogs)
    stats = store.get_json(f"{prefix}/stats.json")
    assert stats["rules"]["passed"] >= 8
    rejected = store.get_jsonl(f"{prefix}/rejected.jsonl")
    assert stats["rules"]["failed"] == sum(
        r["errors"][0].split(":")[0] in ("api", "call", "dialog", "consistency") for r in rejected
    )

    request.request_id = "synth-2"
    again = _finish(client, client.stub.SubmitSynthesis(request))
    assert again.id != final.id
    for name in ("data.jsonl", "dialogs.jsonl", "tools.jsonl", "stats.json", "rejected.jsonl"):
        assert _shas(again)[name] == _shas(final)[name], name


def test_cancel_stops_a_running_synthesis_and_commits_nothing(client, kiln_env, worker) -> None:
    worker("toolsynth")
    request = pb.SynthesisRequest(
        request_id="synth-cancel",
        count=5000,
        tools=_tools_ref(kiln_env),
        dataset_name="cancelled",
        parameters=_parameters({"agents": {"agents": "template"}}),
    )
    job = client.stub.SubmitSynthesis(request)

    def get() -> common_pb2.Job:
        return client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id))

    wait_for(lambda: "dialogs generated" in get().progress.message, 120, "generation under way")
    client.jobs.CancelJob(common_pb2.CancelJobRequest(job_id=job.id))
    final = wait_for(
        lambda: (j := get()).state == common_pb2.JOB_STATE_CANCELLED and j, 10, "cancel"
    )
    assert final.error_code == "CANCELLED" and final.progress.step == 0, "in round 1 of 5000"
    assert not ObjectStore(kiln_env).is_committed(f"datasets/cancelled/{job.id}")


def test_llm_synthesis_job_on_a_served_tiny_model_replays_from_the_cache(
    grpc_server, kiln_env, tiny_model, worker, monkeypatch
) -> None:
    inference = grpc_server("inference", kiln_env)
    monkeypatch.setenv("KILN_INFERENCE_PORT", str(inference.port))
    get_settings.cache_clear()
    settings = get_settings()
    with KilnClient("inference", target=inference.target) as c:
        c.stub.LoadModel(inference_pb2.LoadModelRequest(name="tiny", local_path=str(tiny_model)))
    server = grpc_server("toolsynth", settings)
    worker("toolsynth")
    request = pb.SynthesisRequest(
        request_id="llm-1",
        count=2,
        seed=0,
        model="tiny",
        tools=_tools_ref(settings),
        parameters=_parameters({"agents": {"agreement_k": 2, "max_tokens": 24}, "max_attempts": 1}),
    )
    with KilnClient("toolsynth", target=server.target) as client:
        first = _finish(client, client.stub.SubmitSynthesis(request))
        request.request_id = "llm-2"
        second = _finish(client, client.stub.SubmitSynthesis(request))
    # a random tiny model writes no parseable plan: both slots are rejected, counted by code
    assert first.summary["dialogs"] == 0 and first.summary["rejected_attempts"] == 2
    store = ObjectStore(settings)
    stats = store.get_json(f"datasets/toolsynth/{first.id}/stats.json")
    assert stats["generation"]["failed"] == 2
    assert sum(stats["generation"]["errors"].values()) == 2
    assert first.summary["calls"] == 2  # the two plans (the slots' tool sets differ)
    assert (second.summary["calls"], second.summary["cached_calls"]) == (0, 2)
    assert _shas(second)["rejected.jsonl"] == _shas(first)["rejected.jsonl"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"count": 0}, "count"),
        ({"dialog_mix": {"chatty": 1.0}}, "dialog_mix.chatty"),
        ({"model": ""}, "model"),
        ({"export_format": "yaml"}, "export_format"),
        ({"parameters": _parameters({"agents": {"agents": "template"}})}, "tools"),
        ({"dataset_name": "../up"}, "dataset_name"),
        ({"parameters": _parameters({"pool": {"apis": 0}})}, "parameters.pool"),
    ],
)
def test_bad_synthesis_request_is_invalid_argument(client, changes, field) -> None:
    values = {"request_id": "bad", "count": 4, "model": "tiny", **changes}
    with pytest.raises(grpc.RpcError) as err:
        client.stub.SubmitSynthesis(pb.SynthesisRequest(**values))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (
            {"KILN_MAX_TOOLS_BYTES": "1000"},
            "'datasets/tools/v1/tools.jsonl' is {size:,} bytes, over the limit of 1,000 "
            "(KILN_MAX_TOOLS_BYTES)",
        ),
        ({"KILN_MAX_TOOLS": "2"}, "{count} tools, over the limit of 2 (KILN_MAX_TOOLS)"),
    ],
)
def test_a_tools_file_past_its_limits_is_refused_at_submit(
    grpc_server, kiln_env, monkeypatch, limits, reason
) -> None:
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    tools = _tools_ref(settings)
    server = grpc_server("toolsynth", settings)
    request = pb.SynthesisRequest(request_id="big", count=2, model="tiny", tools=tools)
    with KilnClient("toolsynth", target=server.target) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.SubmitSynthesis(request)
        missing = pb.SynthesisRequest(request_id="gone", count=2, model="tiny", tools=tools)
        missing.tools.key = "datasets/tools/v1/none.jsonl"
        with pytest.raises(grpc.RpcError) as gone:
            client.stub.SubmitSynthesis(missing)
        assert not client.jobs.ListJobs(common_pb2.ListJobsRequest()).jobs, "nothing was queued"
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "tools: " + reason.format(size=tools.size, count=len(TOOLS))
    assert gone.value.details() == "tools: no object at 'datasets/tools/v1/none.jsonl'"
