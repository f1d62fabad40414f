"""PyramidKV ("PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information
Funneling"): lower layers attend broadly and keep more tokens, higher layers fewer. Budgets
fall linearly with depth around the same mean; tokens are chosen per layer by SnapKV-style
observation-window votes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from services.kv.presses import snapkv


@dataclass(frozen=True)
class PyramidKVConfig:
    beta: int = 20  # the top layer keeps average / beta tokens
    snap: snapkv.SnapKVConfig = field(default_factory=snapkv.SnapKVConfig)


def layer_budgets(average: int, num_layers: int, beta: int, floor: int, ceiling: int) -> list[int]:
    """Top layer: average/beta; bottom: 2*average - average/beta; linear in between, clamped
    to [floor, ceiling] (PyramidKV Sec. 3.2)."""
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
