"""What every press (token-selection method) is: what it keeps of the prompt, what it evicts
while decoding, the fewest tokens it can keep. One file per press holds its config, its
selection and its eviction; presses/__init__.py registers it by name. Settings are read from
the request's KVConfig (services/kv/budget.py), which carries every press's fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from services.kv.budget import KVConfig
    from services.kv.cache import LayerStore


class Press:
    name: ClassVar[str]
    decodes: ClassVar[bool] = False  # defines decode-time eviction (compress_decode)
    accumulates_attention: ClassVar[bool] = False  # selects by the prompt's attention sums
    scored: ClassVar[bool] = False  # selects each head's top token_scores (AdaKV composes)
    default_window: ClassVar[int] = 0  # prompt queries its selection reads (0: none)

    def min_tokens(self, config: KVConfig) -> int:
        """Fewest tokens per layer the press can keep."""
        return 1

    def protected_groups(self, config: KVConfig, group_size: int) -> int:
        """Leading quantization groups that b-bit decode eviction never removes."""
        return 0

    def layer_budgets(
        self, kept: int, layers: int, config: KVConfig, sequence_length: int
    ) -> list[int]:
        """Tokens kept per layer when every layer could keep `kept`: the same in each."""
        return [kept] * layers

    def select(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        budget: int,
        scaling: float,
        scores: torch.Tensor | None,
        config: KVConfig,
    ) -> torch.Tensor:
        """Sorted indices [Hkv, budget] of the prompt tokens one layer keeps, budget < T.

        query [Hq, w, D]: the prompt's last w queries (at least the press's window); key
        [Hkv, T, D]; scores [Hkv, T]: the prompt's accumulated attention when the press
        accumulates_attention, else None."""
        raise NotImplementedError

    def token_scores(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        budget: int,
        scaling: float,
        scores: torch.Tensor | None,
        config: KVConfig,
    ) -> torch.Tensor:
        """[Hkv, T]: how much each KV head wants each prompt token, +inf for the tokens the
        press always keeps at this budget (scored presses; select keeps each head's top
        `budget`). Arguments as for select."""
        raise NotImplementedError

    def evict_token(self, store: LayerStore, capacity: int, config: KVConfig) -> torch.Tensor:
        """16-bit decode-time eviction: the index [Hkv] of the token each head drops when the
        layer holds more than `capacity` tokens (presses that decode)."""
        raise NotImplementedError

    def evict_group(self, store: LayerStore, config: KVConfig) -> torch.Tensor:
        """b-bit decode-time eviction: the quantization group [Hkv] each head drops when the
        quantized history is over its capacity (presses that decode)."""
        raise NotImplementedError


def top_tokens(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """Sorted indices [H, min(budget, T)] of each head's highest scores [H, T]; among tied
    scores (+inf: tokens always kept) the newest win."""
    heads, t = scores.shape
    if budget >= t:
        return torch.arange(t, device=scores.device).unsqueeze(0).expand(heads, -1).clone()
    top = scores.flip(-1).topk(budget, dim=-1).indices
    return (t - 1 - top).sort(dim=-1).values
