"""The prober's dataplane (KServe's term; the servicer only converts protobuf around it): its
use cases over any services.llm Backend: probe items, select among chains, and run a dataset
(shared by the servicer and the Celery task)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.errors import InvalidInput
from services.common.reasoning import canonical
from services.llm.base import Backend, SamplingParams
from services.prober.core.probing import (
    ProbeConfig,
    ProbeItem,
    chain_prompt,
    letters_for,
    probe_batch,
)
from services.prober.core.selection import SCORERS, Ranked, SelectionConfig, majority_answer, rank
from services.prober.core.trajectory import Trajectory, build_trajectory

STEP_MODES = ("lines", "sentences")


def validate_item(item: ProbeItem, field: str = "item") -> ProbeItem:
    if not item.question.strip():
        raise InvalidInput(f"{field}.question", "must not be empty")
    if not item.reasoning.strip():
        raise InvalidInput(f"{field}.reasoning", "must not be empty")
    if len(item.options) > 26 or any(not o.strip() for o in item.options):
        raise InvalidInput(f"{field}.options", "at most 26 non-empty options")
    if item.options and item.gold and item.gold not in letters_for(item.options):
        raise InvalidInput(
            f"{field}.gold",
            f"must be one of the option letters {''.join(letters_for(item.options))}",
        )
    return item


def probe_config(step_mode: str, raw_prompt: bool = False) -> ProbeConfig:
    mode = step_mode or "lines"
    if mode not in STEP_MODES:
        raise InvalidInput("step_mode", f"must be one of {', '.join(STEP_MODES)}")
    return ProbeConfig(step_mode=mode, chat=not raw_prompt)


def gold_of(item: ProbeItem) -> str | None:
    if not item.gold:
        return None
    return item.gold if item.options else canonical(item.gold)


def probe_items(
    backend: Backend, items: Sequence[ProbeItem], config: ProbeConfig
) -> list[Trajectory]:
    return [
        build_trajectory(steps, gold_of(item))
        for item, steps in zip(items, probe_batch(backend, items, config), strict=True)
    ]


@dataclass
class Selection:
    ranked: list[Ranked]
    majority: str
    trajectories: list[Trajectory]
    chains: list[str]  # the candidates after resampling
    resampled: list[int]  # indices whose chain was replaced by a fresh sample


@dataclass(frozen=True)
class ResampleConfig:
    """Re-draw chains whose trajectory is unstable (mind changes or confidence drops)."""

    rounds: int = 0  # 0: off; each unstable chain is re-drawn up to this many times
    temperature: float = 0.8
    max_tokens: int = 256
    seed: int = 0


def select(
    backend: Backend,
    question: str,
    options: Sequence[str],
    candidates: Sequence[str],
    scorer: str,
    config: ProbeConfig,
    resample: ResampleConfig | None = None,
) -> Selection:
    if not 1 <= len(candidates) <= 64:
        raise InvalidInput("candidates", "give 1..64 candidate chains")
    scorer = scorer or "cop"
    if scorer not in SCORERS:
        raise InvalidInput("scorer", f"must be one of {', '.join(SCORERS)}")
    resample = resample or ResampleConfig()
    if not 0 <= resample.rounds <= 8:
        raise InvalidInput("resample_rounds", "must be in 0..8")
    items = [
        validate_item(ProbeItem(question, c, tuple(options)), f"candidates[{i}]")
        for i, c in enumerate(candidates)
    ]
    trajectories = probe_items(backend, items, config)
    chains, resampled = list(candidates), []
    head = chain_prompt(items[0], config)
    selection = SelectionConfig(scorer)
    for round_ in range(resample.rounds):
        unstable = [i for i, t in enumerate(trajectories) if t.unstable]
        if not unstable:
            break
        params = SamplingParams(
            max_tokens=resample.max_tokens,
            temperature=resample.temperature,
            seed=resample.seed + round_,
        )
        drawn = backend.generate([head] * len(unstable), params)
        fresh = [
            (i, c.text.strip()) for i, c in zip(unstable, drawn, strict=True) if c.text.strip()
        ]
        probed = probe_items(
            backend, [ProbeItem(question, text, tuple(options)) for _, text in fresh], config
        )
        for (i, text), t in zip(fresh, probed, strict=True):
            if SCORERS[scorer](t, selection) > SCORERS[scorer](trajectories[i], selection):
                chains[i], trajectories[i] = text, t
                if i not in resampled:
                    resampled.append(i)
    return Selection(
        rank(trajectories, selection),
        majority_answer(trajectories),
        trajectories,
        chains,
        sorted(resampled),
    )


def item_from_json(row: dict[str, Any], index: int) -> ProbeItem:
    try:
        item = ProbeItem(
            str(row["question"]),
            str(row["reasoning"]),
            tuple(str(o) for o in row.get("options") or ()),
            str(row["gold"]) if row.get("gold") is not None else None,
        )
    except KeyError as exc:
        raise InvalidInput(f"dataset[{index}]", f"missing field {exc.args[0]!r}") from None
    return validate_item(item, f"dataset[{index}]")


def probe_dataset(
    backend: Backend,
    rows: Sequence[dict[str, Any]],
    config: ProbeConfig,
    batch_size: int = 8,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Trajectory]:
    items = [item_from_json(row, i) for i, row in enumerate(rows)]
    trajectories: list[Trajectory] = []
    for start in range(0, len(items), batch_size):
        trajectories += probe_items(backend, items[start : start + batch_size], config)
        if on_batch:
            on_batch(len(trajectories), len(items))
    return trajectories
