"""Judge throughput through the vllm backend: the vanilla pairwise judge in both orders over
LLMBar Natural pairs, with every judge call of a batch sent to vLLM at once against one call
at a time, in one run on the same tiny model; and kiln's overhead over the raw backend time
(prompt building, caching, parsing, combining, reporting) for the batched run.
Run `python benchmarks/judge.py` (needs the vllm extra)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.judge.core.datasets import load_pairs
from services.judge.core.evaluation import evaluate, report
from services.judge.core.judging import JudgeContext, JudgeSettings
from services.judge.core.vanilla import VanillaJudge
from services.llm.base import Backend
from services.llm.cache import MemoryStore, ResponseCache

DATA = Path(__file__).resolve().parents[1] / "data" / "judge"
console = Console(width=120)


class TimedBackend:
    """Wraps a backend: the seconds spent inside generate, and how it is called.
    one_at_a_time splits every batch into single-prompt calls."""

    def __init__(self, inner: Backend, one_at_a_time: bool = False) -> None:
        self.inner, self.one_at_a_time = inner, one_at_a_time
        self.name, self.model = inner.name, inner.model
        self.seconds, self.calls = 0.0, 0

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def render(self, prompt):
        return self.inner.render(prompt)

    def generate(self, prompts, params):
        batches = [[p] for p in prompts] if self.one_at_a_time else [list(prompts)]
        out = []
        for batch in batches:
            start = time.perf_counter()
            out += self.inner.generate(batch, params)
            self.seconds += time.perf_counter() - start
            self.calls += 1
        return out

    def score(self, prompts, continuations):
        return self.inner.score(prompts, continuations)


def run(backend: TimedBackend, items, batch_size: int, max_tokens: int) -> tuple[float, dict]:
    ctx = JudgeContext(
        lambda model: backend,
        "tiny",
        JudgeSettings(max_tokens=max_tokens),
        ResponseCache(MemoryStore()),  # fresh: every call reaches the backend
    )
    start = time.perf_counter()
    results = evaluate(VanillaJudge(ctx), items, batch_size=batch_size)
    summary = report(items, results, ctx.usage)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--chars", type=int, default=300, help="truncate each text to this")
    args = parser.parse_args()

    from services.llm.tiny import build_tiny_model
    from services.llm.vllm_engine import VLLMBackend

    raw = load_pairs(json.loads((DATA / "llmbar_natural.json").read_text()))[: args.items]
    items = [
        replace(
            it,
            instruction=it.instruction[: args.chars],
            response_a=it.response_a[: args.chars],
            response_b=it.response_b[: args.chars],
        )
        for it in raw
    ]
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model(Path(tmp) / "tiny")
        engine = VLLMBackend(Path(tmp) / "tiny")
        run(TimedBackend(engine), items[:2], 2, args.max_tokens)  # warm-up
        judgments = 2 * len(items)
        rows = []
        for label, backend, batch in (
            ("one call at a time", TimedBackend(engine, one_at_a_time=True), len(items)),
            ("batched (one call per batch)", TimedBackend(engine), len(items)),
        ):
            wall, summary = run(backend, items, batch, args.max_tokens)
            assert summary["usage"]["calls"] == judgments
            rows.append((label, wall, backend.seconds, backend.calls))

    table = Table(
        "mode",
        "judgments",
        "backend calls",
        "wall s",
        "judgments/s",
        "backend s",
        "kiln overhead",
        title=f"vanilla judge, both orders, {len(items)} LLMBar pairs, vllm",
    )
    for label, wall, inner, calls in rows:
        table.add_row(
            label,
            str(judgments),
            str(calls),
            f"{wall:.2f}",
            f"{judgments / wall:.1f}",
            f"{inner:.2f}",
            f"{(wall - inner) / inner:.1%}",
        )
    console.print(table)
    console.print(f"batched / one-at-a-time judgments per second: {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
