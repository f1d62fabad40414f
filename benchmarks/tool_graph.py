"""ToolFlow tool-graph build at ToolACE's pool size: 26,507 APIs synthesized from templates,
embedded with all-MiniLM-L6-v2, edges at tau 0.82. Compares kiln's build (identical texts
embedded once, blocked similarity) with the naive build (every text embedded, one full
similarity matrix) on a pool small enough for the naive one, then times kiln's on the full
pool. Prints a table; run `python benchmarks/tool_graph.py`."""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from services.common.embeddings import default_encoder
from services.toolsynth.core.graph import GraphConfig, ToolGraph, field_texts
from services.toolsynth.core.tools import Tool

DOMAINS = [
    "weather",
    "flights",
    "hotels",
    "stocks",
    "music",
    "movies",
    "recipes",
    "fitness",
    "banking",
    "shipping",
    "calendar",
    "email",
    "maps",
    "news",
    "sports",
    "translation",
    "taxes",
    "insurance",
    "real_estate",
    "jobs",
    "education",
    "health",
    "crypto",
    "gaming",
    "podcasts",
]
ACTIONS = [
    "get",
    "search",
    "create",
    "update",
    "delete",
    "list",
    "book",
    "cancel",
    "convert",
    "track",
    "compare",
]
FIELDS = {
    "city": "Name of the city",
    "date": "Date in YYYY-MM-DD format",
    "user_id": "Identifier of the user account",
    "query": "Free-text search query",
    "limit": "Maximum number of results to return",
    "currency": "Three-letter ISO currency code",
    "amount": "Amount of money",
    "language": "Target language code",
    "category": "Category to filter by",
    "item_id": "Identifier of the item",
    "start_time": "Start time of the period",
    "end_time": "End time of the period",
    "email": "Email address of the recipient",
    "symbol": "Ticker symbol of the asset",
    "address": "Street address",
    "rating": "Minimum rating from 1 to 5",
}


def synthesize_pool(size: int, seed: int = 0) -> list[Tool]:
    rng = random.Random(seed)
    names = list(FIELDS)
    tools = []
    for i in range(size):
        domain, action = DOMAINS[i % len(DOMAINS)], rng.choice(ACTIONS)
        chosen = rng.sample(names, rng.randint(1, 4))
        params = {
            n: {"type": "string", "description": f"{FIELDS[n]} for the {domain} {action}"}
            for n in chosen
        }
        returned = rng.sample(names, 2)
        returns = {n: {"type": "string", "description": f"{FIELDS[n]}"} for n in returned}
        tools.append(
            Tool(
                f"{domain}.{action}_{i}",
                f"{action} {domain}",
                {"type": "object", "properties": params},
                {"type": "object", "properties": returns},
            )
        )
    return tools


def naive(tools: list[Tool], tau: float) -> int:
    encoder = default_encoder()
    per_tool = [field_texts(t.parameters) for t in tools]
    owners = [i for i, items in enumerate(per_tool) for _ in items]
    p = encoder.encode([x for items in per_tool for x in items])
    returns = [field_texts(t.returns) for t in tools]
    r_owner = [i for i, items in enumerate(returns) for _ in items]
    r = encoder.encode([x for items in returns for x in items])
    edges = set()
    for left, owner in ((p, owners), (r, r_owner)):
        rows, cols = ((left @ p.T) > tau).nonzero(as_tuple=True)
        for a, b in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = owner[a], owners[b]
            if i != j:
                edges.add((min(i, j), max(i, j)))
    return len(edges)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(fn) -> tuple[object, float, float]:
    """(result, seconds, peak RSS above the RSS at the start, MiB): the peak is reset first
    (writing 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, (_status_kib("VmHWM") - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=26_507)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--tau", type=float, default=0.82)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    default_encoder().encode(["warm-up"])
    table = Table(
        "build", "APIs", "edges", "seconds", "peak RSS over start, MiB", title="tool graph"
    )
    small = synthesize_pool(args.small)
    kiln, k_s, k_mb = measure(lambda: ToolGraph.build(small, config=GraphConfig(args.tau)))
    edges, n_s, n_mb = measure(lambda: naive(small, args.tau))
    assert edges == kiln.edges, (edges, kiln.edges)
    table.add_row(
        "naive (embed all, full matrix)", str(args.small), str(edges), f"{n_s:.1f}", f"{n_mb:.0f}"
    )
    table.add_row(
        "kiln (dedup, blocked)", str(args.small), str(kiln.edges), f"{k_s:.1f}", f"{k_mb:.0f}"
    )
    pool = synthesize_pool(args.pool)
    full, f_s, f_mb = measure(lambda: ToolGraph.build(pool, config=GraphConfig(args.tau)))
    table.add_row(
        "kiln (dedup, blocked)", str(args.pool), str(full.edges), f"{f_s:.1f}", f"{f_mb:.0f}"
    )
    _walks, w_s, _ = measure(lambda: full.sample_tool_sets(1000, 4, seed=0))
    Console(width=120).print(table)
    print(f"naive / kiln build time at {args.small} APIs: {n_s / k_s:.1f}x")
    print(f"1000 seeded random walks of 4 tools: {w_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
