"""Dialogues per minute of the synthesis pipeline with a fixed backend: the scripted `Player`
(tests/toolsynth_fixtures.py), which answers every agent and checker prompt instantly, so the
time measured is kiln's own (plans, agents, k-sample agreement, rule and model layers,
complexity, embedding dedup); and template agents (no model). For the LLM agents it also
counts the backend round trips: lockstep generation (every pending request of a stage in one
generate call) against driving one dialog at a time, on the same dialogs.
Run `python benchmarks/toolsynth.py [--count 200]`."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from benchmarks.judge import TimedBackend
from services.common.embeddings import default_encoder
from services.llm.cache import CachingBackend
from services.llm.scripted import ScriptedBackend
from services.toolsynth.core.agents import AgentConfig, conversation, derive_seed
from services.toolsynth.core.synthesis import SynthesisConfig, drive, slot_types, synthesize
from tests.toolsynth_fixtures import ALL_TYPES, TOOLS, Player

console = Console(width=120)
LLM_MIX = {"single": 2.0, "parallel": 1.0, "non_tool": 1.0}


def pipeline(count: int, agents: AgentConfig, mix: dict, model_checks: bool, dedup: float) -> tuple:
    timed = TimedBackend(ScriptedBackend(responder=Player()))
    backend = CachingBackend(timed) if agents.agents == "llm" else None
    config = SynthesisConfig(count=count, seed=0, model_checks=model_checks, dedup_threshold=dedup)
    start = time.perf_counter()
    result = synthesize(mix, config, agents, default_encoder().encode, backend, TOOLS)
    seconds = time.perf_counter() - start
    calls = backend.usage.calls if backend else 0
    return len(result.dialogs), seconds, calls, timed.calls


def round_trips(count: int, agents: AgentConfig) -> tuple[int, int]:
    """generate() invocations for the same conversations, lockstep vs one dialog at a time."""
    types = slot_types(LLM_MIX, count, 0)

    def conversations() -> list:
        return [conversation(TOOLS, t, derive_seed(0, i), agents) for i, t in enumerate(types)]

    lockstep = TimedBackend(ScriptedBackend(responder=Player()))
    drive(conversations(), lockstep)
    single = TimedBackend(ScriptedBackend(responder=Player()))
    for c in conversations():
        drive([c], single)
    return lockstep.calls, single.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    default_encoder().encode(["warm up"])
    llm = AgentConfig(agreement_k=3)
    template = AgentConfig(agents="template")

    table = Table(
        "agents",
        "dialogs",
        "seconds",
        "dialogs/min",
        "backend calls/dialog",
        "generate() batches",
        title=f"toolsynth pipeline, fixed backend, {args.count} dialogs",
    )
    # near-dedup off except in one row: the Player's dialogs differ by a city name only, and
    # template dialogs share their phrasing, so at 0.95 most would be near duplicates
    rows = [
        ("template (no model)", template, ALL_TYPES, False, 1.0),
        ("template, near-dedup 0.95", template, ALL_TYPES, False, 0.95),
        ("LLM agents, k=3", llm, LLM_MIX, False, 1.0),
        ("LLM agents, k=3, model checks", llm, LLM_MIX, True, 1.0),
    ]
    for name, agents, mix, checks, dedup in rows:
        kept, seconds, calls, batches = pipeline(args.count, agents, mix, checks, dedup)
        table.add_row(
            name,
            str(kept),
            f"{seconds:.1f}",
            f"{kept / seconds * 60:,.0f}",
            f"{calls / kept:.1f}" if kept else "-",
            str(batches),
        )
    console.print(table)

    lockstep, single = round_trips(args.count, llm)
    trips = Table("driver", "generate() calls", title="LLM agents: backend round trips")
    trips.add_row("one dialog at a time", str(single))
    trips.add_row("lockstep (kiln)", str(lockstep))
    trips.add_row("ratio", f"{single / lockstep:.1f}x fewer")
    console.print(trips)


if __name__ == "__main__":
    main()
