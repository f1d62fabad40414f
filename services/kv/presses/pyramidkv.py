"""PyramidKV ("PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
Funneling"): lower layers attend broadly and keep more tokens, higher layers fewer. Budgets
fall linearly with depth around the same mean; tokens are chosen per layer by SnapKV-style
observation-window votes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from services.kv.presses import snapkv

if TYPE_CHECKING:
    from services.kv.budget import KVConfig


@dataclass(frozen=True)
class PyramidKVConfig:
    beta: int = 20  # the top layer keeps average / beta tokens
    snap: snapkv.SnapKVConfig = field(default_factory=snapkv.SnapKVConfig)


def layer_budgets(average: int, num_layers: int, beta: int, floor: int, ceiling: int) -> list[int]:
    """Top layer: average/beta; bottom: 2*average - average/beta; linear in between, clamped
    to [floor, ceiling] (PyramidKV Sec. 3.2).

    beta applies to the whole per-layer budget, as the paper's text and NVIDIA kvpress do
    (kiln draws kvpress's pyramid at compression 0.5). The authors' reference code applies it
    to the budget minus the observation window and adds the window back to every layer, a
    flatter pyramid; kiln keeps the paper's form so that beta means what Sec. 3.2 says."""
    if num_layers == 1:
        return [min(ceiling, average)]
    top = max(floor, average // beta)
    bottom = 2 * average - top
    budgets = [
        round(bottom - (bottom - top) * layer / (num_layers - 1)) for layer in range(num_layers)
    ]
    return [min(ceiling, max(floor, b)) for b in budgets]


def select(
    query: torch.Tensor,
    key: torch.Tensor,
    layer_budget: int,
    config: PyramidKVConfig,
    scaling: float,
) -> torch.Tensor:
    return snapkv.select(query, key, layer_budget, config.snap, scaling)


class PyramidKVPress(snapkv.SnapKVPress):
    """SnapKV's selection under per-layer budgets that fall with depth (prefill only)."""

    name = "pyramidkv"

    def layer_budgets(
        self, kept: int, layers: int, config: KVConfig, sequence_length: int
    ) -> list[int]:
        return layer_budgets(
            kept, layers, config.pyramid_beta, self.min_tokens(config), sequence_length
        )

    def select(self, query, key, budget, scaling, scores, config: KVConfig) -> torch.Tensor:
        settings = PyramidKVConfig(config.pyramid_beta, snapkv.settings_of(config))
        return select(query, key, budget, settings, scaling)


PRESS = PyramidKVPress()
