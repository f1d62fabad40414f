"""The inference engine without a transport: protobuf KV settings become KVConfig with its own
defaults (the one table), and a generation's Deltas, usage and KV stats on the tiny model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kiln.inference.v1 import inference_pb2 as pb
from services.common.admission import Admission
from services.common.errors import InvalidInput
from services.inference.core.engine import Delta, Finished, GenerateRequest, InferenceEngine
from services.inference.registry import ModelRegistry
from services.inference.servicer import kv_from_pb
from services.kv.budget import KVConfig, cache_bytes
from services.llm import SamplingParams


def test_unset_kv_fields_take_kvconfigs_defaults_and_zero_is_a_setting_where_optional() -> None:
    assert kv_from_pb(pb.KVCompression()) is None
    snap = pb.KVCompression(method="snapkv", budget_fp16_tokens=64)
    assert kv_from_pb(snap) == KVConfig("snapkv", budget_fp16_tokens=64)
    set_fields = pb.KVCompression(
        method="streamingllm", budget_bytes=4096, sink_tokens=0, window_size=16
    )
    assert kv_from_pb(set_fields) == KVConfig(
        "streamingllm", budget_bytes=4096, sink_tokens=0, window_size=16
    )
    ada = pb.KVCompression(method="h2o", bits=4, budget_fp16_tokens=8, adakv=True)
    ada.adakv_safeguard = 0.0
    assert kv_from_pb(ada) == KVConfig(
        "h2o", bits=4, budget_fp16_tokens=8, adakv=True, adakv_safeguard=0.0
    )


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> InferenceEngine:
    registry = ModelRegistry()
    registry.load("tiny", tiny_model, str(tiny_model), dtype="float32")
    return InferenceEngine(registry, Admission(1, 4, "calls", "KILN_MAX_WAITING_GENERATIONS"))


def outputs(engine: InferenceEngine, request: GenerateRequest) -> list:
    async def collect() -> list:
        return [output async for output in engine.generate(request)]

    return asyncio.run(collect())


def test_deltas_add_up_to_the_finished_text_with_usage_and_kv_stats(engine) -> None:
    kv = KVConfig("snapkv", bits=4, budget_fp16_tokens=24, group_size=16, residual_length=16)
    prompt = "the answer is " * 30
    request = GenerateRequest("r1", "tiny", prompt, SamplingParams(max_tokens=12), kv)
    *deltas, done = outputs(engine, request)
    assert all(isinstance(d, Delta) for d in deltas) and isinstance(done, Finished)
    assert "".join(d.text for d in deltas) == done.text
    assert [t for d in deltas for t, _, _ in d.steps] == done.token_ids[
        : sum(len(d.steps) for d in deltas)
    ]
    backend = engine.models.get("tiny").backend
    assert done.prompt_tokens == len(backend.encode(prompt, 12)) and done.engine == "hf"
    assert done.completion_tokens == len(done.token_ids) == 12
    stats = done.kv_stats
    assert stats.plan.method == "snapkv" and stats.plan.bits == 4
    geometry = engine.geometry("tiny")
    held = cache_bytes(stats.tokens_per_layer, stats.plan.spec, geometry, pruned=True)
    assert stats.bytes_used == held  # the prompt's kept tokens and the decoded ones
    # 12 tokens chosen, the first 11 fed back through the cache
    assert stats.tokens_per_layer == [n + 11 for n in stats.plan.tokens_per_layer]
    assert not engine.running and engine.abort("r1") is False


def test_settings_are_checked_before_anything_runs(engine) -> None:
    params = SamplingParams(max_tokens=4)
    ada = KVConfig("streamingllm", budget_fp16_tokens=24, adakv=True)
    with pytest.raises(InvalidInput) as error:
        outputs(engine, GenerateRequest("r2", "tiny", "hello", params, ada))
    assert error.value.field == "kv.adakv"
    with pytest.raises(InvalidInput) as error:
        outputs(engine, GenerateRequest("r3", "tiny", "hello", params, None, engine="tpu"))
    assert error.value.field == "engine"
    assert not engine.running


def test_a_model_name_that_is_no_name_is_refused_before_any_path_is_built(engine) -> None:
    """The fuzzer's find: a 300-character name made the models folder lookup raise OSError
    (file name too long), an INTERNAL."""
    for name in ("[" * 300, "../tiny", ""):
        with pytest.raises(InvalidInput) as error:
            engine.plan(name, KVConfig(), 10)
        assert error.value.field == "model"
