"""Every registered press through the same checks (like kvpress's test over all presses), on
a tiny model: the cache's measured bytes equal the byte formula, every layer keeps what the
plan says and no more than the budget allows, decoding evicts within the plan's capacity
(presses that decode), and a budget that holds the whole prompt gives the model's own greedy
tokens."""

from __future__ import annotations

import pytest

from services.kv.budget import KVConfig, cache_bytes
from services.kv.decoder import geometry_of
from services.kv.presses import PRESSES
from services.llm import SamplingParams
from services.llm.hf import HFBackend
from tests.unit.test_kv_cache import PROMPT, hf, run

__all__ = ["hf"]  # the tiny model's backend, shared with test_kv_cache


# every press, and AdaKV's per-head budgets over every scored press
VARIANTS = [(name, False) for name in sorted(PRESSES)] + [
    (name, True) for name in sorted(PRESSES) if PRESSES[name].scored
]


def settings(name: str, bits: int, **extra) -> KVConfig:
    groups = {"group_size": 16, "residual_length": 16} if bits < 16 else {}
    return KVConfig(name, bits=bits, window_size=8, **groups, **extra)


@pytest.mark.parametrize("bits", [16, 4])
@pytest.mark.parametrize(("name", "ada"), VARIANTS)
def test_bytes_equal_the_formula_and_layers_keep_the_plan(hf: HFBackend, name, ada, bits) -> None:
    geometry = geometry_of(hf.hf_model)
    budget = (40 if bits == 16 else 12) * geometry.token_bytes()  # ~1/3 of the prompt's
    config = settings(name, bits, budget_bytes=budget, adakv=ada)
    _, stats, prompt = run(hf, config, max_tokens=1)
    plan = stats.plan
    assert plan.pruned and sum(plan.tokens_per_layer) < prompt * len(plan.tokens_per_layer)
    assert stats.tokens_per_layer == plan.tokens_per_layer
    assert (
        stats.bytes_used
        == plan.bytes
        == cache_bytes(plan.tokens_per_layer, plan.spec, geometry, pruned=True)
    )
    assert plan.bytes <= budget
    assert min(plan.tokens_per_layer) >= config.min_tokens()
    heads = geometry.num_kv_heads
    per_head = stats.kept_per_head
    assert [sum(layer) for layer in per_head] == [n * heads for n in plan.tokens_per_layer]


@pytest.mark.parametrize("bits", [16, 4])
@pytest.mark.parametrize("name", sorted(n for n, press in PRESSES.items() if press.decodes))
def test_decoding_stays_within_the_plans_capacity(hf: HFBackend, name, bits) -> None:
    geometry = geometry_of(hf.hf_model)
    budget = 48 * geometry.token_bytes()
    config = settings(name, bits, budget_bytes=budget, compress_decode=True)
    tokens, stats, _ = run(hf, config, max_tokens=40)
    assert len(tokens) == 40
    capacity = stats.plan.decode_tokens
    assert all(kept <= cap for kept, cap in zip(stats.tokens_per_layer, capacity, strict=True))
    assert stats.bytes_used <= budget


@pytest.mark.parametrize(("name", "ada"), VARIANTS)
def test_a_budget_that_holds_the_prompt_gives_the_models_own_tokens(
    hf: HFBackend, name, ada
) -> None:
    reference = hf.generate([PROMPT], SamplingParams(max_tokens=12))[0].token_ids
    config = settings(name, 16, budget_fp16_tokens=10_000, adakv=ada)
    tokens, stats, prompt = run(hf, config)
    assert tokens == reference
    assert not stats.plan.pruned
    assert stats.plan.tokens_per_layer == [prompt] * len(stats.plan.tokens_per_layer)
