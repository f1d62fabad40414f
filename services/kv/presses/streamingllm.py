"""StreamingLLM ("Efficient Streaming Language Models with Attention Sinks"): keep the first
`sink_tokens` tokens (attention sinks) and the most recent tokens; evict the middle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from services.kv.presses.base import Press

if TYPE_CHECKING:
    from services.kv.budget import KVConfig
    from services.kv.cache import LayerStore


@dataclass(frozen=True)
class StreamingLLMConfig:
    sink_tokens: int = 4


def keep_indices(
    seq_len: int,
    budget: int,
    config: StreamingLLMConfig,
    num_heads: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Indices [num_heads, min(budget, seq_len)]: sinks 0..s-1, then the last budget-s tokens."""
    if budget >= seq_len:
        kept = torch.arange(seq_len, device=device)
    else:
        sinks = min(config.sink_tokens, budget)
        kept = torch.cat(
            [
                torch.arange(sinks, device=device),
                torch.arange(seq_len - (budget - sinks), seq_len, device=device),
            ]
        )
    return kept.unsqueeze(0).expand(num_heads, -1).clone()


class StreamingLLMPress(Press):
    """Sinks plus the most recent tokens, at prefill and while decoding (the oldest token
    after the sinks leaves; at b bits, the oldest group after the sink groups)."""

    name = "streamingllm"
    decodes = True

    def min_tokens(self, config: KVConfig) -> int:
        return config.sink_tokens + 1

    def protected_groups(self, config: KVConfig, group_size: int) -> int:
        return -(-config.sink_tokens // group_size)

    def select(self, query, key, budget, scaling, scores, config: KVConfig) -> torch.Tensor:
        settings = StreamingLLMConfig(config.sink_tokens)
        return keep_indices(key.shape[1], budget, settings, key.shape[0], key.device)

    def evict_token(self, store: LayerStore, capacity: int, config: KVConfig) -> torch.Tensor:
        heads = store.residual_k.shape[0]
        return torch.full((heads,), config.sink_tokens, device=store.residual_k.device)

    def evict_group(self, store: LayerStore, config: KVConfig) -> torch.Tensor:
        heads = store.residual_k.shape[0]
        first = self.protected_groups(config, store.spec.group_size)
        return torch.full((heads,), first, device=store.residual_k.device)


PRESS = StreamingLLMPress()
