"""A synthesis job's pipeline: tools (given, or ToolACE's self-evolved pool) -> ToolFlow tool
graph -> per dialog a graph-sampled tool set and a dialog type -> multi-agent generation ->
rule layer -> model layer (optional) -> complexity selection -> dedup and decontamination.

Dialogs are slots 0..count-1; each slot's dialog type comes from the requested mix (largest
remainder quotas, shuffled by the seed). A slot whose dialog is rejected is tried again in
the next round with a new seed, up to `max_attempts` rounds. Every random choice derives from
(seed, slot, attempt), and every LLM call is greedy or seeded, so the same seed with the same
(cached) LLM responses gives the same dataset, byte for byte.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from services.llm.base import Backend
from services.llm.cache import CachingBackend
from services.toolsynth.core.agents import (
    AgentConfig,
    Conversation,
    Rejected,
    conversation,
    derive_seed,
)
from services.toolsynth.core.api_pool import PoolConfig, evolve, speciation
from services.toolsynth.core.complexity import ComplexityConfig, complexity
from services.toolsynth.core.dialogs import DIALOG_TYPES, Dialog
from services.toolsynth.core.graph import GraphConfig, ToolGraph
from services.toolsynth.core.model_checks import model_errors
from services.toolsynth.core.quality import Embed, dedup, leaked_tools, quality_stats
from services.toolsynth.core.rules import dialog_errors
from services.toolsynth.core.tools import Tool, check_tool

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class SynthesisConfig:
    count: int = 16
    seed: int = 0
    tools_per_dialog: int = 3  # random-walk length: the dialog's candidate tools
    tau: float = 0.82
    max_attempts: int = 3
    model_checks: bool = False
    dedup_threshold: float = 0.95  # cosine of dialog texts; 1.0 keeps near duplicates
    leak_threshold: float = 0.9

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 100_000:
            raise ValueError("count must be in 1..100000")
        if not 1 <= self.tools_per_dialog <= 16:
            raise ValueError("tools_per_dialog must be in 1..16")
        if not 1 <= self.max_attempts <= 16:
            raise ValueError("max_attempts must be in 1..16")
        for name in ("tau", "dedup_threshold", "leak_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a cosine similarity in [-1, 1]")


@dataclass
class SynthesisResult:
    dialogs: list[Dialog]
    tools: list[Tool]
    stats: dict[str, Any]
    rejected: list[dict[str, Any]] = field(default_factory=list)


def quotas(mix: dict[str, float], count: int) -> dict[str, int]:
    """Largest-remainder apportionment of count to the dialog types by share."""
    total = sum(mix.values())
    exact = {t: count * share / total for t, share in mix.items()}
    out = {t: math.floor(v) for t, v in exact.items()}
    by_remainder = sorted(mix, key=lambda t: (-(exact[t] - out[t]), DIALOG_TYPES.index(t)))
    for t in by_remainder[: count - sum(out.values())]:
        out[t] += 1
    return out


def slot_types(mix: dict[str, float], count: int, seed: int) -> list[str]:
    types = [t for t, n in quotas(mix, count).items() for _ in range(n)]
    random.Random(derive_seed(seed, "types")).shuffle(types)
    return types


def memoized(embed: Embed) -> Embed:
    """embed, computing each distinct text once per synthesis (kept dialogs are compared
    again in every round)."""
    vectors: dict[str, torch.Tensor] = {}

    def cached(texts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in vectors))
        if missing:
            vectors.update(zip(missing, embed(missing), strict=True))
        return torch.stack([vectors[t] for t in texts])

    return cached


def _staged(backend: Backend, stage: str) -> Backend:
    """The backend counting its usage under stage (when it counts usage at all)."""
    return backend.with_stage(stage) if isinstance(backend, CachingBackend) else backend


def drive(
    conversations: Sequence[Conversation],
    backend: Backend | None,
    on_finish: Callable[[int, int], None] = lambda finished, total: None,
) -> list[Dialog | str]:
    """Runs conversations in lockstep: every pending request of a (stage, sampling) group goes
    to the backend in one generate call. Returns each dialog, or its rejection code;
    on_finish(finished so far, total) follows each conversation's end."""
    results: list[Dialog | str] = [""] * len(conversations)
    pending: dict[int, list] = {}
    finished = 0

    def advance(i: int, replies: list[str] | None) -> None:
        nonlocal finished
        try:
            pending[i] = conversations[i].send(replies)
            return
        except StopIteration as done:
            results[i] = done.value
        except Rejected as rejected:
            results[i] = rejected.code
        finished += 1
        on_finish(finished, len(conversations))

    for i in range(len(conversations)):
        advance(i, None)
    while pending:
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for i, requests in pending.items():
            for j, r in enumerate(requests):
                groups.setdefault((r.stage, r.params), []).append((i, j))
        replies: dict[int, list[str]] = {i: [""] * len(r) for i, r in pending.items()}
        for (stage, params), members in groups.items():
            if backend is None:
                raise ValueError("these agents need a backend")
            prompts = [pending[i][j].prompt for i, j in members]
            completions = _staged(backend, stage).generate(prompts, params)
            for (i, j), completion in zip(members, completions, strict=True):
                replies[i][j] = completion.text
        waiting = list(pending)
        pending.clear()
        for i in waiting:
            advance(i, replies[i])
    return results


@dataclass
class StageCounts:
    """Pass/fail counts of a verification stage, and failures per error code."""

    passed: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)

    def record(self, codes: Sequence[str]) -> bool:
        if codes:
            self.failed += 1
            self.errors.update(codes)
        else:
            self.passed += 1
        return not codes

    def to_dict(self) -> dict[str, Any]:
        errors = dict(sorted(self.errors.items()))
        return {"passed": self.passed, "failed": self.failed, "errors": errors}


def synthesize(
    mix: dict[str, float],
    config: SynthesisConfig,
    agents: AgentConfig,
    embed: Embed,
    backend: Backend | None = None,
    tools: Sequence[Tool] | None = None,
    pool: PoolConfig | None = None,
    complexity_config: ComplexityConfig | None = None,
    benchmark_tools: Sequence[Tool] = (),
    on_progress: Progress = lambda done, total, message: None,
) -> SynthesisResult:
    """The dataset of `config.count` dialogs (fewer if slots run out of attempts), the tools,
    per-stage stats and the rejected attempts."""
    complexity_config = complexity_config or ComplexityConfig()
    embed = memoized(embed)
    stats: dict[str, Any] = {}
    if tools:
        errors = {t.name: check_tool(t) for t in tools}
        invalid = {name: codes for name, codes in errors.items() if codes}
        stats["api"] = {"given": len(tools), "invalid": invalid}
        tools = [t for t in tools if t.name not in invalid]
    else:
        if backend is None:
            raise ValueError("an evolved API pool needs a backend")
        pool = pool or PoolConfig()
        caller = _staged(backend, "pool")
        tree = speciation(caller, pool, config.seed)
        tools, stats["api"] = evolve(caller, tree, [], pool, config.seed)
        stats["api"]["tree"] = tree.domains
    if not tools:
        raise ValueError("no valid tools to synthesize with")
    graph = ToolGraph.build(tools, embed, GraphConfig(tau=config.tau))
    stats["graph"] = {"tools": len(tools), "edges": graph.edges}
    leaked = leaked_tools(tools, benchmark_tools, embed, config.leak_threshold)

    types = slot_types(mix, config.count, config.seed)
    kept: dict[int, Dialog] = {}
    generation, rules, model = StageCounts(), StageCounts(), StageCounts()
    removed = {"complexity": 0, "exact_duplicate": 0, "near_duplicate": 0, "leaked": 0}
    scores: list[float] = []
    rejected: list[dict[str, Any]] = []
    for attempt in range(config.max_attempts):
        slots = [s for s in range(config.count) if s not in kept]
        if not slots:
            break
        seeds = [derive_seed(config.seed, s, attempt) for s in slots]
        conversations = [
            conversation(
                [tools[i] for i in graph.random_walk(config.tools_per_dialog, random.Random(sd))],
                types[s],
                sd,
                agents,
                derive_seed(config.seed, "round", attempt),
            )
            for s, sd in zip(slots, seeds, strict=True)
        ]
        kept_before = len(kept)
        results = drive(
            conversations,
            backend,
            lambda n, total, r=attempt + 1, k=kept_before: on_progress(
                k, config.count, f"round {r}: {n}/{total} dialogs generated"
            ),
        )

        def reject(slot: int, codes: list[str], dialog: Dialog | None = None, a=attempt) -> None:
            record = {"slot": slot, "attempt": a, "errors": codes}
            rejected.append(record | ({"dialog": dialog.to_dict()} if dialog else {}))

        candidates: list[tuple[int, Dialog]] = []
        for s, result in zip(slots, results, strict=True):
            if not generation.record([result] if isinstance(result, str) else []):
                reject(s, [result])
                continue
            errors = dialog_errors(result, check_apis=False)
            if rules.record(errors):
                candidates.append((s, result))
            else:
                reject(s, errors, result)
        if config.model_checks and candidates:
            verdicts = model_errors(
                [d for _, d in candidates],
                _staged(backend, "verify"),
                agents.llm_tools,
            )
            for (s, d), errors in zip(candidates, verdicts, strict=True):
                if not model.record(errors):
                    reject(s, errors, d)
            candidates = [c for c, e in zip(candidates, verdicts, strict=True) if not e]
        values = complexity([d for _, d in candidates], complexity_config, backend, embed)
        selected = []
        for (s, d), value in zip(candidates, values, strict=True):
            d.meta["complexity"] = round(value, 6)
            if complexity_config.keeps(value):
                selected.append((s, d))
                scores.append(value)
            else:
                removed["complexity"] += 1
                reject(s, ["complexity:out_of_range"], d)
        clean = []
        for s, d in selected:
            if leaked & {c.name for _, _, c in d.calls()}:
                removed["leaked"] += 1
                reject(s, ["leak:benchmark_tool"], d)
            else:
                clean.append((s, d))
        ordered = sorted(kept.items()) + clean
        unique, counts = dedup([d for _, d in ordered], embed, config.dedup_threshold)
        survivors = {id(d) for d in unique}
        removed["exact_duplicate"] += counts["exact"]
        removed["near_duplicate"] += counts["near"]
        for s, d in clean:
            if id(d) in survivors:
                kept[s] = d
            else:
                reject(s, ["dedup:duplicate"], d)
        on_progress(len(kept), config.count, f"round {attempt + 1}: {len(kept)} kept")

    dialogs = [kept[s] for s in sorted(kept)]
    for i, d in enumerate(dialogs):
        d.meta["index"] = i
    stats["generation"] = generation.to_dict()
    stats["rules"] = rules.to_dict()
    if config.model_checks:
        stats["model"] = model.to_dict()
    stats["selection"] = removed | {
        "complexity_measure": complexity_config.measure,
        "complexity_min": min(scores, default=0.0),
        "complexity_max": max(scores, default=0.0),
    }
    stats["requested"] = config.count
    stats["quality"] = quality_stats(dialogs, mix)
    stats["leaked_tools"] = sorted(leaked)
    return SynthesisResult(dialogs, list(tools), stats, rejected)
