"""Byte accounting and the tokens x bits plan, against hand-computed numbers."""

from __future__ import annotations

import random

import pytest

from services.common.errors import InvalidInput
from services.kv.budget import (
    CacheGeometry,
    KVConfig,
    QuantSpec,
    cache_bytes,
    head_bytes,
    max_tokens,
    plan_kv,
)
from services.kv.presses.pyramidkv import layer_budgets

LLAMA_8B = CacheGeometry(num_layers=32, num_kv_heads=8, head_dim=128)


def test_head_bytes_by_hand() -> None:
    # N=100, D=64, 4 bits, G=32, R=32, fp16 residual, pruned: Q=96 quantized, r=4 residual
    # codes 2*96*64*4/8 = 6144; key scale+zero (96/32)*64*2*2 = 768;
    # value scale+zero 96*(64/32)*2*2 = 768; residual 4*64*2*2 = 1024; positions 100*4 = 400
    assert head_bytes(100, QuantSpec(4, 32, 32), 64, pruned=True) == 9104
    assert head_bytes(100, QuantSpec(4, 32, 32), 64, pruned=False) == 8704
    # 16-bit: keys and values at 2 bytes each, whatever the weights' dtype
    assert head_bytes(100, QuantSpec(16), 64, pruned=False) == 100 * 64 * 2 * 2
    # 2 bits, G=16, R=64, N=64: codes 2*64*64*2/8 = 2048; key params (64/16)*64*4 = 1024;
    # value params 64*(64/16)*4 = 1024; no residual
    assert head_bytes(64, QuantSpec(2, 16, 64), 64, pruned=False) == 4096
    geometry = CacheGeometry(2, 3, 64)
    assert cache_bytes([100, 64], QuantSpec(4, 32, 32), geometry, True) == 3 * (
        9104 + head_bytes(64, QuantSpec(4, 32, 32), 64, True)
    )


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_random_budgets_fit_exactly(bits: int) -> None:
    rng = random.Random(bits)
    spec = QuantSpec(bits, 32, 64)
    for _ in range(200):
        budget = rng.randint(10**5, 10**9)
        n = max_tokens(budget, spec, LLAMA_8B, limit=10**6, pruned=True)
        assert cache_bytes([n] * 32, spec, LLAMA_8B, True) <= budget
        assert cache_bytes([n + 1] * 32, spec, LLAMA_8B, True) > budget


def test_policy_follows_the_paper() -> None:
    full = cache_bytes([4096] * 32, QuantSpec(16), LLAMA_8B, False)
    assert full == 4096 * 32 * 8 * 128 * 2 * 2 == 536_870_912
    loose = plan_kv(KVConfig("snapkv", budget_bytes=full), 4096, LLAMA_8B)
    assert (loose.bits, loose.tokens_kept, loose.bytes) == (16, 4096, full)
    # 8 bits with G=32: codes are half of fp16, scales add 1/16: 56.25% of the full cache
    eight8 = cache_bytes([4096] * 32, QuantSpec(8), LLAMA_8B, False)
    assert eight8 == full // 2 + full // 16
    eight = plan_kv(KVConfig("snapkv", budget_bytes=eight8), 4096, LLAMA_8B)
    assert (eight.bits, eight.tokens_kept, eight.pruned) == (8, 4096, False)
    tight = plan_kv(KVConfig("snapkv", budget_bytes=full // 16), 4096, LLAMA_8B)
    assert tight.bits == 4 and 256 < tight.tokens_kept < 4096 and tight.bytes <= full // 16
    assert tight.tokens_kept == max_tokens(full // 16, tight.spec, LLAMA_8B, 4096, True)
    two = plan_kv(KVConfig("snapkv", bits=2, budget_bytes=full // 16), 4096, LLAMA_8B)
    assert two.bits == 2 and two.tokens_kept > tight.tokens_kept
    fp16_tokens = plan_kv(KVConfig("h2o", budget_fp16_tokens=512), 4096, LLAMA_8B)
    assert fp16_tokens.bits == 4 and fp16_tokens.bytes <= 512 * 32 * 8 * 128 * 4


def test_pyramid_budgets() -> None:
    assert layer_budgets(100, 5, 20, 1, 10_000) == [195, 148, 100, 52, 5]
    plan = plan_kv(KVConfig("pyramidkv", budget_fp16_tokens=256), 4096, LLAMA_8B)
    per_layer = plan.tokens_per_layer
    assert per_layer == sorted(per_layer, reverse=True) and per_layer[0] > per_layer[-1]
    assert plan.bytes <= 256 * LLAMA_8B.token_bytes()


@pytest.mark.parametrize(
    "config,field",
    [
        (KVConfig("magic", budget_bytes=10**6), "kv.method"),
        (KVConfig("snapkv"), "kv.budget"),
        (KVConfig("snapkv", budget_bytes=1000), "kv.budget_bytes"),
        (KVConfig("none", budget_bytes=10**6), "kv.budget_bytes"),
        (KVConfig("snapkv", bits=3, budget_bytes=10**6), "kv.bits"),
        (KVConfig("snapkv", budget_bytes=10**8, group_size=48), "kv.group_size"),
        (KVConfig("snapkv", budget_bytes=10**8, residual_length=48), "kv.residual_length"),
        (KVConfig("snapkv", budget_bytes=10**8, compress_decode=True), "kv.compress_decode"),
        (KVConfig("h2o", budget_bytes=2000, bits=4, compress_decode=True), "kv.budget_bytes"),
        (KVConfig("snapkv", budget_bytes=-1), "kv.budget_bytes"),
        (KVConfig("snapkv", budget_bytes=10**8, kernel_size=4), "kv.kernel_size"),
    ],
)
def test_bad_configs_name_the_field(config: KVConfig, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        plan_kv(config, 4096, LLAMA_8B)
    assert err.value.field == field


@pytest.mark.parametrize("tokens", [float("nan"), float("inf"), 1e308, -1.0])
def test_a_budget_that_is_not_a_finite_token_count_is_invalid(tokens: float) -> None:
    with pytest.raises(InvalidInput) as err:
        plan_kv(KVConfig("snapkv", budget_fp16_tokens=tokens), 1000, LLAMA_8B)
    assert err.value.field == "kv.budget_fp16_tokens"
