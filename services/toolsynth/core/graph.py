"""ToolFlow's tool graph ("Boosting LLM Tool-Calling Through Natural and Coherent Dialogue
Synthesis", Sec. 3.1) and its random-walk sampling of related tool sets.

Nodes are tools. Each parameter and each return field is embedded as "Name: Description"
(all-MiniLM-L6-v2, unit vectors). Tools i != j are joined when some parameter of i and some
parameter of j (parameter-parameter), or some return field of i and some parameter of j
(return-parameter), have cosine similarity above tau (default 0.82). Identical texts are
embedded once; similarities are computed in row blocks, so memory stays
O(block x parameters) rather than O(parameters^2), and the graph is kept as CSR arrays.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

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
    """An undirected graph in CSR form: the neighbors of tool i are
    indices[indptr[i]:indptr[i + 1]] (int32, sorted), 8 bytes per directed edge."""

    def __init__(self, tools: Sequence[Tool], indptr: torch.Tensor, indices: torch.Tensor) -> None:
        self.tools = list(tools)
        self.indptr = indptr
        self.indices = indices

    @classmethod
    def from_keys(cls, tools: Sequence[Tool], keys: torch.Tensor) -> ToolGraph:
        """keys: unique undirected edges i * n + j with i < j."""
        n = len(tools)
        low, high = keys // n, keys % n
        src, dst = torch.cat([low, high]), torch.cat([high, low])
        order = torch.argsort(src * n + dst)
        counts = torch.bincount(src, minlength=n)
        indptr = torch.zeros(n + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(tools, indptr, dst[order].to(torch.int32))

    @classmethod
    def from_edges(cls, tools: Sequence[Tool], edges: Sequence[tuple[int, int]]) -> ToolGraph:
        n = len(tools)
        keys = {min(i, j) * n + max(i, j) for i, j in edges if i != j}
        return cls.from_keys(tools, torch.tensor(sorted(keys), dtype=torch.long))

    @cached_property
    def connected(self) -> list[int]:
        """Tools with at least one neighbor (where walks start)."""
        return ((self.indptr[1:] - self.indptr[:-1]) > 0).nonzero().flatten().tolist()

    def neighbors(self, i: int) -> list[int]:
        return self.indices[self.indptr[i] : self.indptr[i + 1]].tolist()

    @property
    def adjacency(self) -> list[set[int]]:
        return [set(self.neighbors(i)) for i in range(len(self.tools))]

    @property
    def edges(self) -> int:
        return len(self.indices) // 2

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
        n = len(tools)
        p_owner = torch.tensor(param_owner, dtype=torch.long)
        found: list[torch.Tensor] = []
        for left, left_owner in ((p, param_owner), (r, return_owner)):
            owner = torch.tensor(left_owner, dtype=torch.long)
            for start in range(0, len(left), config.block):
                sims = left[start : start + config.block] @ p.T  # [block, parameters]
                rows, cols = (sims > config.tau).nonzero(as_tuple=True)
                a, b = owner[start + rows], p_owner[cols]
                keep = a != b
                a, b = a[keep], b[keep]
                found.append(torch.unique(torch.minimum(a, b) * n + torch.maximum(a, b)))
        keys = torch.unique(torch.cat(found)) if found else torch.empty(0, dtype=torch.long)
        return cls.from_keys(tools, keys)

    def random_walk(self, length: int, rng: random.Random) -> list[int]:
        """A walk of up to `length` distinct tools from a random tool with neighbors (or any
        tool, in a graph with no edges), each step to a random unvisited neighbor."""
        walk = [rng.choice(self.connected or range(len(self.tools)))]
        while len(walk) < length:
            options = [j for j in self.neighbors(walk[-1]) if j not in walk]
            if not options:
                break
            walk.append(rng.choice(options))
        return walk

    def sample_tool_sets(self, count: int, length: int, seed: int = 0) -> list[list[Tool]]:
        rng = random.Random(seed)
        return [[self.tools[i] for i in self.random_walk(length, rng)] for _ in range(count)]
