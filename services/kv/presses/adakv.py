"""AdaKV ("Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for Efficient
LLM Inference", Feng et al. 2024): a layer's budget is shared across its KV heads by their
scores instead of split evenly. It wraps any scored press (SnapKV, PyramidKV, H2O):

    B_h = |{ i : i in TopK(concat_h s_h, H * B) and i belongs to head h }|      (Alg. 1)

with each head guaranteed floor(alpha * B) of its own best tokens first (the safeguard of the
authors' code and kvpress's AdaKVPress, alpha = 0.2), so a head with flat scores keeps some
context. Scores are per grouped KV head (averaged over the query heads that share it: Ada-KV's
GQA support), which is the granularity the cache stores, so a head that keeps fewer tokens
holds less memory; nothing is masked.

At b bits a head's history is quantized in blocks of R tokens and the rest (N mod R) stays at
16 bits, so heads must differ by whole blocks to hold what the uniform plan holds: every head
keeps B_h = B + k_h R tokens with sum_h k_h = 0 (clamped to the prompt), the same residual and
never more bytes than B tokens per head (tests/unit/test_adakv.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.kv.presses.base import top_tokens

DEFAULT_SAFEGUARD = 0.2


@dataclass(frozen=True)
class AdaKVConfig:
    safeguard: float = DEFAULT_SAFEGUARD  # alpha: share of B each head keeps first


def head_budgets(scores: torch.Tensor, budget: int, config: AdaKVConfig, block: int) -> list[int]:
    """Tokens each KV head keeps, B_h, for scores [H, T] (+inf: always kept) and a per-head
    budget B < T; block R: heads differ by multiples of R (1 at 16 bits).

    Alg. 1 over the flattened scores after the safeguard, then rounded to whole blocks around
    B by largest remainder, so that sum_h B_h = H * B (less only where the prompt ends)."""
    heads, t = scores.shape
    guaranteed = int(budget * config.safeguard)
    boosted = scores.float().clone()
    if guaranteed:
        own_best = scores.topk(guaranteed, dim=-1).indices
        boosted.scatter_(1, own_best, float("inf"))
    chosen = boosted.flatten().topk(heads * budget).indices // t
    wanted = torch.bincount(chosen, minlength=heads).tolist()
    floor = min(budget, int(torch.isinf(scores[0]).sum()))  # the press's forced tokens
    low = -((budget - floor) // block)  # most blocks a head may give up
    high = (t - budget) // block  # most blocks a head may take
    exact = [(n - budget) / block for n in wanted]
    steps = [min(high, max(low, int(x // 1))) for x in exact]
    order = sorted(range(heads), key=lambda h: exact[h] - steps[h], reverse=True)
    spare = -sum(steps)  # blocks still to hand out: sum_h k_h must be 0
    while spare > 0 and (takers := [h for h in order if steps[h] < high]):
        for h in takers[:spare]:
            steps[h], spare = steps[h] + 1, spare - 1
    while spare < 0 and (givers := [h for h in reversed(order) if steps[h] > low]):
        for h in givers[:-spare]:
            steps[h], spare = steps[h] - 1, spare + 1
    return [budget + k * block for k in steps]


def select(
    scores: torch.Tensor, budget: int, config: AdaKVConfig, block: int
) -> list[torch.Tensor]:
    """Sorted indices of the tokens each head keeps: head h's top B_h scores ([B_h] each)."""
    return [
        top_tokens(scores[h : h + 1], kept)[0]
        for h, kept in enumerate(head_budgets(scores, budget, config, block))
    ]
