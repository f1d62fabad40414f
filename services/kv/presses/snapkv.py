"""SnapKV ("SnapKV: LLM Knows What You are Looking for Before Generation"): the last
`window_size` prompt tokens (the observation window) vote, through their attention, for the
prefix tokens to keep; votes are smoothed by 1-D pooling (kernel_size) and the top tokens per
KV head are kept together with the window itself (SnapKV Alg. 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from services.kv.presses.base import Press, top_tokens

if TYPE_CHECKING:
    from services.kv.budget import KVConfig


@dataclass(frozen=True)
class SnapKVConfig:
    window_size: int = 32
    kernel_size: int = 7
    pooling: str = "avgpool"  # avgpool | maxpool
    query_aware: bool = True  # False: the window ends before the trailing question tokens
    question_tokens: int = 0


def window_votes(
    query: torch.Tensor, key: torch.Tensor, window: tuple[int, int], scaling: float
) -> torch.Tensor:
    """Attention of the window queries [start, end) over the keys before `start`.

    query [Hq, Tq, D] (the last Tq >= T - start of the T positions: all of them, or a chunked
    prefill's kept tail), key [Hkv, T, D] -> [Hkv, start]: softmax over each window query's
    causal keys, summed over the window, averaged over the query heads of each KV head.
    """
    start, end = window
    hq, hkv = query.shape[0], key.shape[0]
    group = hq // hkv
    offset = key.shape[1] - query.shape[1]
    keys = key[:, :end].float().repeat_interleave(group, dim=0)
    window_queries = query[:, start - offset : end - offset].float()
    logits = window_queries @ keys.transpose(-1, -2) * scaling  # [Hq, w, end]
    rows = torch.arange(start, end, device=query.device).unsqueeze(-1)
    columns = torch.arange(end, device=query.device).unsqueeze(0)
    logits = logits.masked_fill(columns > rows, float("-inf"))
    votes = logits.softmax(-1)[..., :start].sum(1)  # [Hq, start]
    return votes.reshape(hkv, group, start).mean(1)


def pool(votes: torch.Tensor, kernel_size: int, pooling: str) -> torch.Tensor:
    """1-D pooling along tokens with stride 1 and same-length padding: [H, T] -> [H, T]."""
    x = votes.unsqueeze(1)
    pad = kernel_size // 2
    if pooling == "maxpool":
        out = F.max_pool1d(x, kernel_size, stride=1, padding=pad)
    else:
        out = F.avg_pool1d(x, kernel_size, stride=1, padding=pad, count_include_pad=False)
    return out.squeeze(1)


def token_scores(
    query: torch.Tensor, key: torch.Tensor, budget: int, config: SnapKVConfig, scaling: float
) -> torch.Tensor:
    """[Hkv, T]: the pooled window votes of the prefix tokens, +inf for the tokens always
    kept (the observation window, and the question after it when query-agnostic). query
    [Hq, Tq, D]: the last Tq positions, at least the window and the question after it; key
    [Hkv, T, D]. The window shrinks to fit a budget smaller than it."""
    hkv, t = key.shape[0], key.shape[1]
    tail = 0 if config.query_aware else min(config.question_tokens, t)
    end = t - tail
    window = max(0, min(config.window_size, end, budget - tail))
    start = end - window
    out = torch.full((hkv, t), float("inf"), device=key.device)
    if start > 0:
        votes = window_votes(query, key, (start, end), scaling)
        out[:, :start] = pool(votes, config.kernel_size, config.pooling)
    return out


def select(
    query: torch.Tensor, key: torch.Tensor, budget: int, config: SnapKVConfig, scaling: float
) -> torch.Tensor:
    """Sorted indices [Hkv, min(budget, T)] to keep: the window, then the best-voted prefix
    tokens (SnapKV Alg. 1)."""
    return top_tokens(token_scores(query, key, budget, config, scaling), budget)


class SnapKVPress(Press):
    """The observation window's pooled votes pick the prefix tokens to keep (prefill only)."""

    name = "snapkv"
    scored = True
    default_window = 32

    def min_tokens(self, config: KVConfig) -> int:
        return config.window + 1

    def select(self, query, key, budget, scaling, scores, config: KVConfig) -> torch.Tensor:
        return select(query, key, budget, settings_of(config), scaling)

    def token_scores(self, query, key, budget, scaling, scores, config: KVConfig) -> torch.Tensor:
        return token_scores(query, key, budget, settings_of(config), scaling)


def settings_of(config: KVConfig) -> SnapKVConfig:
    """The request's SnapKV settings."""
    return SnapKVConfig(
        config.window,
        config.kernel_size,
        config.pooling,
        config.query_aware,
        config.question_tokens,
    )


PRESS = SnapKVPress()
