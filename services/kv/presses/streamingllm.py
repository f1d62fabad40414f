"""StreamingLLM ("Efficient Streaming Language Models with Attention Sinks"): keep the first
`sink_tokens` tokens (attention sinks) and the most recent tokens; evict the middle."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
