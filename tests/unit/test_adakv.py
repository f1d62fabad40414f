"""AdaKV's per-head budgets (Alg. 1 with the safeguard, rounded to whole quantization blocks)
on scripted scores, the bytes they hold, and the settings it refuses."""

from __future__ import annotations

import pytest
import torch

from services.common.errors import InvalidInput
from services.kv.budget import QuantSpec, head_bytes
from services.kv.presses import adakv
from services.kv.presses.adakv import AdaKVConfig
from tests.unit.test_kv_budget import LLAMA_8B

INF = float("inf")
TWO_HEADS = torch.tensor(
    [
        [5.0, 4.0, 3.0, 0.5, 0.4, INF],  # a head that attends to its context
        [0.3, 0.2, 0.1, 0.05, 0.01, INF],  # a flat head
    ]
)


def test_the_layer_budget_goes_to_the_head_with_the_higher_scores() -> None:
    """Top 6 of the 12 scores: both windows (inf), then 5, 4, 3 and 0.5 of head 0."""
    assert adakv.head_budgets(TWO_HEADS, 3, AdaKVConfig(safeguard=0.0), block=1) == [5, 1]
    kept = adakv.select(TWO_HEADS, 3, AdaKVConfig(safeguard=0.0), block=1)
    assert [k.tolist() for k in kept] == [[0, 1, 2, 3, 5], [5]]


def test_the_safeguard_keeps_each_heads_own_best_first() -> None:
    """alpha 0.67 of B = 3 guarantees 2 tokens a head: head 1 keeps its window and 0.3, then
    head 0's 4 and 3 win the remaining two."""
    config = AdaKVConfig(safeguard=0.67)
    assert adakv.head_budgets(TWO_HEADS, 3, config, block=1) == [4, 2]
    kept = adakv.select(TWO_HEADS, 3, config, block=1)
    assert [k.tolist() for k in kept] == [[0, 1, 2, 5], [0, 5]]


def test_quantized_heads_differ_by_whole_blocks_and_hold_the_uniform_bytes() -> None:
    """Alg. 1 wants 8, 4 and 3 tokens of B = 5; in blocks of 2 around 5 that is +1.5, -0.5
    and -1 blocks: floors +1, -1, -1 and the spare block to the largest remainder (head 0)."""
    scores = torch.zeros(3, 10)
    scores[:, -1] = INF
    scores[0, :7], scores[1, :3], scores[2, :2] = 10.0, 5.0, 4.0
    budgets = adakv.head_budgets(scores, 5, AdaKVConfig(safeguard=0.0), block=2)
    assert budgets == [9, 3, 3]
    spec = QuantSpec(bits=4, group_size=2, residual_length=2)
    held = sum(head_bytes(n, spec, 64, pruned=True) for n in budgets)
    assert held == 3 * head_bytes(5, spec, 64, pruned=True)


def test_no_head_drops_below_the_tokens_its_press_always_keeps() -> None:
    """Head 1 wants only its 3-token window of B = 4: one token to head 0 at 16 bits, but in
    blocks of 2 that would take head 1 below its window, so both keep 4."""
    scores = torch.zeros(2, 12)
    scores[:, -3:] = INF
    scores[0, :9] = 1.0
    assert adakv.head_budgets(scores, 4, AdaKVConfig(safeguard=0.0), block=1) == [5, 3]
    assert adakv.head_budgets(scores, 4, AdaKVConfig(safeguard=0.0), block=2) == [4, 4]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"method": "streamingllm"}, "kv.adakv"),
        ({"method": "h2o", "compress_decode": True}, "kv.adakv"),
        ({"method": "snapkv", "adakv_safeguard": 1.5}, "kv.adakv_safeguard"),
        ({"method": "snapkv", "adakv_safeguard": float("nan")}, "kv.adakv_safeguard"),
    ],
)
def test_settings_adakv_cannot_honour_are_refused(settings, field) -> None:
    from services.kv.budget import KVConfig

    config = KVConfig(adakv=True, budget_fp16_tokens=64, **settings)
    with pytest.raises(InvalidInput) as error:
        config.validate(LLAMA_8B.head_dim)
    assert error.value.field == field
