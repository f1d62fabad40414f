"""ToolFlow's tool graph: exact edges from scripted embeddings, real MiniLM similarity on
related and unrelated tools, and seeded random walks that follow edges."""

import random
from itertools import pairwise

import torch

from services.toolsynth.core.graph import GraphConfig, ToolGraph, field_texts
from services.toolsynth.core.tools import Tool


def tool(name: str, params: dict[str, str], returns: dict[str, str] | None = None) -> Tool:
    def schema(fields: dict[str, str]) -> dict:
        return {
            "type": "object",
            "properties": {k: {"type": "string", "description": d} for k, d in fields.items()},
        }

    return Tool(name, name, schema(params), schema(returns) if returns else None)


def axis_embed(texts):
    """Each text's vector is the unit axis named by its first word's first letter."""
    out = torch.zeros(len(texts), 26)
    for i, text in enumerate(texts):
        out[i, ord(text[0]) - ord("a")] = 1.0
    return out


def test_edges_param_param_and_return_param() -> None:
    tools = [
        tool("a", {"alpha": "x"}),
        tool("b", {"apple": "y"}),  # shares axis a with tool a: parameter-parameter edge
        tool("c", {"zeta": "z"}, returns={"beta": "r"}),
        tool("d", {"banana": "w"}),  # tool c returns axis b: return-parameter edge c-d
        tool("e", {"quux": "q"}),
    ]
    graph = ToolGraph.build(tools, axis_embed, GraphConfig(tau=0.82, block=2))
    assert graph.adjacency == [{1}, {0}, {3}, {2}, set()]
    assert graph.edges == 2
    assert field_texts(tools[2].returns) == ["beta: r"]


def test_minilm_joins_related_tools_only() -> None:
    tools = [
        tool("weather", {"city": "The name of the city"}),
        tool("hotels", {"city": "Name of the city"}),  # cosine 0.99 with weather's city
        tool("stocks", {"ticker": "Stock ticker symbol, e.g. AAPL"}),
    ]
    graph = ToolGraph.build(tools)
    assert graph.adjacency[0] == {1} and graph.adjacency[2] == set()
    loose = ToolGraph.build(tools, config=GraphConfig(tau=-1.0))
    assert loose.edges == 3


def test_random_walks_are_seeded_and_follow_edges() -> None:
    tools = [tool(f"t{i}", {chr(ord("a") + i // 2): "x"}) for i in range(8)]
    # pairs (0,1), (2,3), ... share an axis; a chain joins the pairs
    built = ToolGraph.build(tools, axis_embed)
    assert built.adjacency == [{1}, {0}, {3}, {2}, {5}, {4}, {7}, {6}]
    graph = ToolGraph.from_edges(tools, [(i, i + 1) for i in range(7)] + [(3, 0)])
    assert graph.edges == 8 and graph.neighbors(0) == [1, 3]
    first = graph.sample_tool_sets(20, 4, seed=7)
    assert first == graph.sample_tool_sets(20, 4, seed=7)
    rng = random.Random(1)
    for _ in range(50):
        walk = graph.random_walk(5, rng)
        assert len(set(walk)) == len(walk) <= 5
        assert all(b in graph.adjacency[a] for a, b in pairwise(walk))
