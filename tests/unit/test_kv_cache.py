"""The kiln KV cache on a tiny model: exact bytes, unchanged positions, lossless 16-bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.inference.core.budget import KVConfig, QuantSpec, cache_bytes
from services.inference.core.generation import compressed_stream, geometry_of
from services.inference.core.kv_cache import LayerStore
from services.llm import SamplingParams
from services.llm.hf import HFBackend
from services.llm.tokens import encode_prompt

PROMPT = "the weather in Paris is fine and 12 + 30 = 42 so the answer is " * 4


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> HFBackend:
    return HFBackend(tiny_model)


def run(hf: HFBackend, config: KVConfig, max_tokens: int = 12):
    stats: list = []
    ids = encode_prompt(hf.tokenizer, PROMPT)
    tokens = [
        t
        for t, _ in compressed_stream(
            hf.hf_model,
            ids,
            max_tokens,
            lambda lp: int(lp.argmax()),
            config,
            hf.tokenizer.eos_token_id,
            stats=stats,
        )
    ]
    return tokens, stats[0], len(ids)


def test_sixteen_bit_no_compression_equals_the_model(hf: HFBackend) -> None:
    reference = hf.generate([PROMPT], SamplingParams(max_tokens=12))[0].token_ids
    tokens, stats, _ = run(hf, KVConfig("none", bits=16))
    assert tokens == reference
    assert stats.bytes_used == stats.bytes_full  # nothing saved, nothing lost
    # a budget that holds everything keeps the model's own tokens too
    tokens, stats, _ = run(hf, KVConfig("snapkv", budget_fp16_tokens=10_000))
    assert tokens == reference and stats.plan.bits == 16 and not stats.plan.pruned


@pytest.mark.parametrize(
    "config",
    [
        KVConfig("none", bits=8),
        KVConfig("none", bits=2, group_size=16, residual_length=16),
        KVConfig("snapkv", budget_fp16_tokens=24, window_size=8),
        KVConfig("streamingllm", budget_fp16_tokens=30),
        KVConfig("h2o", budget_fp16_tokens=30),
        KVConfig("pyramidkv", budget_fp16_tokens=24, window_size=8, bits=4),
    ],
)
def test_measured_bytes_equal_the_formula(hf: HFBackend, config: KVConfig) -> None:
    """After prefill (one token generated, no decode step yet) the cache holds exactly the
    plan's bytes; the plan respects the budget."""
    _, stats, prompt_len = run(hf, config, max_tokens=1)
    plan = stats.plan
    geometry = geometry_of(hf.hf_model)
    assert stats.tokens_per_layer == plan.tokens_per_layer
    assert (
        stats.bytes_used
        == plan.bytes
        == cache_bytes(plan.tokens_per_layer, plan.spec, geometry, plan.pruned)
    )
    assert stats.bytes_full == prompt_len * geometry.token_bytes()
    if config.budget_fp16_tokens:
        assert plan.bytes <= config.budget_fp16_tokens * geometry.token_bytes(2)
        assert plan.pruned and plan.bits == (config.bits or 4)


def test_kept_tokens_keep_their_positions(hf: HFBackend) -> None:
    from services.inference.core.budget import plan_kv
    from services.inference.core.generation import use_kiln_attention
    from services.inference.core.kv_cache import KilnCache

    ids = encode_prompt(hf.tokenizer, PROMPT)
    config = KVConfig("streamingllm", budget_fp16_tokens=20, bits=16, sink_tokens=4)
    use_kiln_attention(hf.hf_model)
    geometry = geometry_of(hf.hf_model)
    cache = KilnCache(plan_kv(config, len(ids), geometry), config, geometry, torch.float32)
    with torch.inference_mode():
        hf.hf_model(
            input_ids=torch.tensor([ids]),
            position_ids=torch.arange(len(ids))[None],
            attention_mask=torch.zeros(1, 1, 1, 1, dtype=torch.bool),
            past_key_values=cache,
        )
        for step in range(3):
            position = len(ids) + step
            hf.hf_model(
                input_ids=torch.tensor([[5]]),
                position_ids=torch.tensor([[position]]),
                attention_mask=torch.zeros(1, 1, 1, 1, dtype=torch.bool),
                past_key_values=cache,
            )
    kept = cache.plan.tokens_per_layer[0]
    expected = [
        0,
        1,
        2,
        3,
        *range(len(ids) - (kept - 4), len(ids)),
        len(ids),
        len(ids) + 1,
        len(ids) + 2,
    ]
    for store in cache.layers:
        assert store.positions[0].tolist() == expected
    assert cache.get_seq_length() == len(ids) + 3


def test_flush_quantizes_only_the_new_block() -> None:
    store = LayerStore(QuantSpec(4, 32, 32), torch.float32, track_positions=False)
    store.extend(torch.randn(2, 40, 64), torch.randn(2, 40, 64))
    assert store.keys_q.shape[1] == 32 and store.residual_k.shape[1] == 8
    history = [
        t.clone() for q in (store.keys_q, store.values_q) for t in (q.codes, q.scale, q.zero)
    ]
    store.extend(torch.randn(2, 24, 64), torch.randn(2, 24, 64))
    assert store.keys_q.shape[1] == 64 and store.residual_k.shape[1] == 0
    after = [
        t[:, : old.shape[1]]
        for q in (store.keys_q, store.values_q)
        for t, old in zip(
            (q.codes, q.scale, q.zero),
            history[:3] if q is store.keys_q else history[3:],
            strict=True,
        )
    ]
    assert all(torch.equal(a, b) for a, b in zip(after, history, strict=True))


def test_h2o_decode_eviction_holds_the_budget(hf: HFBackend) -> None:
    config = KVConfig("h2o", budget_fp16_tokens=20, compress_decode=True)
    _, stats, _ = run(hf, config, max_tokens=10)
    budget = stats.plan.tokens_per_layer
    assert stats.tokens_per_layer == budget  # decoded tokens evicted others, one for one


def test_batched_decoding_with_a_budget_per_request(hf: HFBackend) -> None:
    from services.inference.core.generation import batched_greedy

    prompts = [PROMPT, "12 + 30 = 42 and " * 6, "the weather in Oslo is " * 9]
    configs = [
        KVConfig("none", bits=16),
        KVConfig("snapkv", budget_fp16_tokens=24, window_size=8),
        KVConfig("streamingllm", bits=8, budget_fp16_tokens=40),
    ]
    ids = [encode_prompt(hf.tokenizer, p) for p in prompts]
    batched = batched_greedy(hf.hf_model, ids, configs, 10, hf.tokenizer.eos_token_id)
    for prompt_ids, config, got in zip(ids, configs, batched, strict=True):
        alone = [
            t
            for t, _ in compressed_stream(
                hf.hf_model,
                prompt_ids,
                10,
                lambda lp: int(lp.argmax()),
                config,
                hf.tokenizer.eos_token_id,
            )
        ]
        assert got == alone


def test_transformers_generate_runs_on_the_kiln_cache(hf: HFBackend) -> None:
    from services.inference.core.budget import plan_kv
    from services.inference.core.generation import use_kiln_attention
    from services.inference.core.kv_cache import KilnCache

    ids = hf.tokenizer(PROMPT, return_tensors="pt").input_ids
    reference = hf.hf_model.generate(ids, max_new_tokens=8, do_sample=False)
    use_kiln_attention(hf.hf_model)
    geometry = geometry_of(hf.hf_model)
    for config, same in (
        (KVConfig("none", bits=16), True),
        (KVConfig("snapkv", budget_fp16_tokens=24, window_size=8), None),
    ):
        cache = KilnCache(plan_kv(config, ids.shape[1], geometry), config, geometry, torch.float32)
        out = hf.hf_model.generate(ids, past_key_values=cache, max_new_tokens=8, do_sample=False)
        if same:
            assert torch.equal(out, reference)
        assert cache.seen_tokens == ids.shape[1] + 7  # the last token is never fed back
        assert cache.tokens_per_layer() == [n + 7 for n in cache.plan.tokens_per_layer]
