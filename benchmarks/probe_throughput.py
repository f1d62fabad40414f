"""Chain-of-Probe throughput: batched probing (one Score call per batch of items) against
step-by-step probing (one Score call per probe prefix) on the same items and the same tiny
model, in one run. Prints a table; run `python benchmarks/probe_throughput.py`."""

from __future__ import annotations

import argparse
import random
import time

from rich.console import Console
from rich.table import Table

from services.llm.hf import HFBackend
from services.prober.core.probing import ProbeConfig, ProbeItem, probe_batch
from services.prober.core.trajectory import ProbeStep

console = Console()


def make_items(count: int, steps: int, seed: int = 0) -> list[ProbeItem]:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        reasoning = "\n".join(f"Step {k}: {a} + {b} is {a + b - k}." for k in range(steps))
        items.append(
            ProbeItem(
                f"Item {i}: what is {a} + {b}?",
                reasoning,
                (str(a + b), str(a + b + 1), str(a * b), str(abs(a - b))),
            )
        )
    return items


class CountingBackend:
    """Counts Score calls of the wrapped backend."""

    def __init__(self, inner: HFBackend) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.model = inner.name, inner.model

    def score(self, prompts, continuations):
        self.calls += 1
        return self.inner.score(prompts, continuations)


def step_by_step(
    backend: CountingBackend, items: list[ProbeItem], config: ProbeConfig
) -> list[list[ProbeStep]]:
    """The unbatched baseline: probe each item alone, one Score call per prefix."""
    from services.prober.core.probing import letters_for, probe_prefixes

    results = []
    for item in items:
        letters = letters_for(item.options)
        steps = []
        for k, prefix in enumerate(probe_prefixes(item, config)):
            scores = backend.score([prefix] * len(letters), letters)
            best = max(range(len(letters)), key=lambda i: scores[i].total)
            steps.append(ProbeStep(k, letters[best], 0.0))
        results.append(steps)
    return results


def main() -> None:
    from services.common.settings import get_settings
    from services.llm.tiny import build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    folder = get_settings().effective_cache_dir / "tiny-bench"
    if not (folder / "config.json").exists():
        build_tiny_model(folder, seed=0)
    backend = CountingBackend(HFBackend(folder))
    items = make_items(args.items, args.steps)
    config = ProbeConfig()
    probe_batch(backend, items[:2], config)  # warm up
    rows = []
    backend.calls = 0
    start = time.perf_counter()
    baseline = step_by_step(backend, items, config)
    seconds = time.perf_counter() - start
    rows.append(("step by step (1 call per prefix)", backend.calls, seconds))
    backend.calls = 0
    start = time.perf_counter()
    batched = []
    for i in range(0, len(items), args.batch):
        batched += probe_batch(backend, items[i : i + args.batch], config)
    seconds_batched = time.perf_counter() - start
    rows.append((f"batched ({args.batch} items per call)", backend.calls, seconds_batched))
    same = all(
        [s.answer for s in a] == [s.answer for s in b]
        for a, b in zip(baseline, batched, strict=True)
    )
    table = Table(
        "mode",
        "Score calls",
        "seconds",
        "items/s",
        "speedup",
        title=f"probing {args.items} items x {args.steps + 1} probes x 4 options "
        f"(tiny model, CPU); same answers: {same}",
    )
    for mode, calls, secs in rows:
        table.add_row(
            mode, str(calls), f"{secs:.2f}", f"{args.items / secs:.1f}", f"{rows[0][2] / secs:.2f}x"
        )
    console.print(table)


if __name__ == "__main__":
    main()
