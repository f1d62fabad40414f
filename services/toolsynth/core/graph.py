"""ToolFlow's tool graph ("Boosting LLM Tool-Calling Through Natural and Coherent Dialogue
Synthesis", Sec. 3.1) and its random-walk sampling of related tool sets.

Nodes are tools. Each parameter and each return field is embedded as "Name: Description"
(all-MiniLM-L6-v2, unit vectors). Tools i != j are joined when some parameter of i and some
parameter of j (parameter-parameter), or some return field of i and some parameter of j
(return-parameter), have cosine similarity above tau (default 0.82). Identical texts are
embedded once; similarities are computed in row blocks, so memory stays
O(block x parameters) rather than O(parameters^2).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from services.toolsynth.core.tools import Tool, json_schema

Embed = Callable[[Sequence[str]], torch.Tensor]  # texts -> [N, d] unit vectors


@dataclass(frozen=True)
class GraphConfig:
    tau: float = 0.82
    block: int = 2048  # rows of the similarity matrix computed at once

    def __post_init__(self) -> None:
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError("tau must be a cosine similarity in [-1, 1]")
        if self.block < 1:
            raise ValueError("block must be >= 1")


def field_texts(schema: dict | None) -> list[str]:
    """ "name: description" of each property of an object schema."""
    properties = (json_schema(schema or {}) or {}).get("properties", {})
    return [f"{name}: {spec.get('description', '')}".strip() for name, spec in properties.items()]


def _owners(per_tool: list[list[str]]) -> tuple[list[str], list[int]]:
    texts, owners = [], []
    for i, items in enumerate(per_tool):
        texts += items
        owners += [i] * len(items)
    return texts, owners


class ToolGraph:
    def __init__(self, tools: Sequence[Tool], adjacency: list[set[int]]) -> None:
        self.tools = list(tools)
        self.adjacency = adjacency

    @property
    def edges(self) -> int:
        return sum(len(a) for a in self.adjacency) // 2

    @classmethod
    def build(
        cls, tools: Sequence[Tool], embed: Embed | None = None, config: GraphConfig | None = None
    ) -> ToolGraph:
        config = config or GraphConfig()
        if embed is None:
            from services.common.embeddings import default_encoder

            embed = default_encoder().encode
        params, param_owner = _owners([field_texts(t.parameters) for t in tools])
        returns, return_owner = _owners([field_texts(t.returns) for t in tools])
        unique = list(dict.fromkeys(params + returns))
        index = {text: i for i, text in enumerate(unique)}
        vectors = embed(unique) if unique else torch.empty(0, 1)
        p = vectors[[index[t] for t in params]] if params else vectors[:0]
        r = vectors[[index[t] for t in returns]] if returns else vectors[:0]
        adjacency: list[set[int]] = [set() for _ in tools]
        p_owner = torch.tensor(param_owner, dtype=torch.long)
        for left, left_owner in ((p, param_owner), (r, return_owner)):
            owner = torch.tensor(left_owner, dtype=torch.long)
            for start in range(0, len(left), config.block):
                sims = left[start : start + config.block] @ p.T  # [block, parameters]
                rows, cols = (sims > config.tau).nonzero(as_tuple=True)
                a, b = owner[start + rows], p_owner[cols]
                for i, j in zip(a.tolist(), b.tolist(), strict=True):
                    if i != j:
                        adjacency[i].add(j)
                        adjacency[j].add(i)
        return cls(tools, adjacency)

    def random_walk(self, length: int, rng: random.Random) -> list[int]:
        """A walk of up to `length` distinct tools from a random tool with neighbors (or any
        tool, in a graph with no edges), each step to a random unvisited neighbor."""
        connected = [i for i, a in enumerate(self.adjacency) if a]
        walk = [rng.choice(connected or range(len(self.tools)))]
        while len(walk) < length:
            options = sorted(self.adjacency[walk[-1]] - set(walk))
            if not options:
                break
            walk.append(rng.choice(options))
        return walk

    def sample_tool_sets(self, count: int, length: int, seed: int = 0) -> list[list[Tool]]:
        rng = random.Random(seed)
        return [[self.tools[i] for i in self.random_walk(length, rng)] for _ in range(count)]
