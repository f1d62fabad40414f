"""H2O ("Heavy-Hitter Oracle for Efficient Generative Inference of LLMs"): keep the tokens
with the largest accumulated attention (heavy hitters) plus a recent window, split evenly by
default (the paper's 50/50 heavy/recent budget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from services.kv.presses.base import Press, top_tokens

if TYPE_CHECKING:
    from services.kv.budget import KVConfig
    from services.kv.cache import LayerStore


@dataclass(frozen=True)
class H2OConfig:
    recent_ratio: float = 0.5  # share of the budget for the most recent tokens
    query_chunk: int = 256  # queries per chunk when accumulating (bounds memory to chunk x T)


def accumulated_attention(
    query: torch.Tensor, key: torch.Tensor, scaling: float, chunk: int = 256
) -> torch.Tensor:
    """Column sums of the causal attention matrix, per KV head.

    query [Hq, Tq, D] (the last Tq of the Tk positions), key [Hkv, Tk, D] -> [Hkv, Tk]: sum
    over those queries i >= j of softmax_i(j), averaged over the Hq/Hkv query heads sharing
    each KV head. A chunked prefill adds up the sums of its chunks (padded to Tk).
    """
    hq, tq, _ = query.shape
    hkv, t = key.shape[0], key.shape[1]
    offset = t - tq
    group = hq // hkv
    keys = key.float().repeat_interleave(group, dim=0)
    device = query.device
    totals = torch.zeros(hq, t, device=device)
    columns = torch.arange(t, device=device).unsqueeze(0)
    for start in range(0, tq, chunk):
        q = query[:, start : start + chunk].float()
        logits = q @ keys.transpose(-1, -2) * scaling  # [Hq, c, Tk]
        rows = torch.arange(offset + start, offset + start + q.shape[1], device=device)
        logits = logits.masked_fill(columns > rows.unsqueeze(-1), float("-inf"))
        totals += logits.softmax(-1).sum(1)
    return totals.reshape(hkv, group, t).mean(1)


def token_scores(accumulated: torch.Tensor, budget: int, config: H2OConfig) -> torch.Tensor:
    """accumulated [Hkv, T] with the recent window (recent_ratio of the budget, at least one
    token) set to +inf: it is always kept."""
    t = accumulated.shape[1]
    recent = min(budget, max(1, int(budget * config.recent_ratio)))
    scores = accumulated.float().clone()
    scores[:, max(0, t - recent) :] = float("inf")
    return scores


def select(scores: torch.Tensor, budget: int, config: H2OConfig) -> torch.Tensor:
    """scores [Hkv, T] -> sorted indices [Hkv, budget]: the recent window plus the heavy
    hitters among the older tokens."""
    return top_tokens(token_scores(scores, budget, config), budget)


class H2OPress(Press):
    """Heavy hitters by the prompt's accumulated attention plus a recent window; while
    decoding, each step's attention adds to the scores and the lowest-scored token outside
    the recent share of the capacity leaves (at b bits, the lowest-scored group outside the
    newest block)."""

    name = "h2o"
    decodes = True
    accumulates_attention = True
    scored = True

    def select(self, query, key, budget, scaling, scores, config: KVConfig) -> torch.Tensor:
        return select(scores, budget, H2OConfig(config.recent_ratio))

    def token_scores(self, query, key, budget, scaling, scores, config: KVConfig) -> torch.Tensor:
        return token_scores(scores, budget, H2OConfig(config.recent_ratio))

    def evict_token(self, store: LayerStore, capacity: int, config: KVConfig) -> torch.Tensor:
        recent = max(1, int(capacity * config.recent_ratio))
        return store.scores[:, : store.tokens - recent].argmin(dim=-1)

    def evict_group(self, store: LayerStore, config: KVConfig) -> torch.Tensor:
        size, block = store.spec.group_size, store.spec.residual_length
        older = store.scores[:, : store.quantized_tokens - block]
        return older.reshape(older.shape[0], -1, size).sum(-1).argmin(dim=-1)


PRESS = H2OPress()
