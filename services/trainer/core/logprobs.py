"""Per-token log-probabilities of completion tokens under a causal LM."""

from __future__ import annotations

from typing import Any

import torch


def token_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """log pi(x_t | x_<t) for every position t >= 1, zero where completion_mask[:, t] is 0.

    input_ids, attention_mask, completion_mask: [B, T]; returns [B, T - 1] aligned with
    input_ids[:, 1:] (position 0 is never a completion token). position_ids [B, T] marks packed
    rows (data.collate_packed): attention then stays within each example, and attention_mask
    only counts tokens.
    """
    if position_ids is not None:
        out = model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    else:
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    logits = out.logits
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    logps = picked - torch.logsumexp(logits, dim=-1)
    return logps * completion_mask[:, 1:].to(logps.dtype)
