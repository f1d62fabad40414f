"""CoP-based selection among sampled chains of thought (Chain-of-Probe Sec. 5).

Each candidate chain is probed; its score comes from its trajectory. Scorers:

- `cop` (default): p_K(a) - drop_weight * sum_k max(0, p_{k-1}(a) - p_k(a))
  - change_weight * mind_changes / K, where a is the chain's final answer and p_k(a) the
  model's confidence in it after step k. Chain-of-Probe finds that correct answers often rest
  on flawed reasoning, visible as wavering confidence and mind changes; sound chains build
  confidence in their answer and keep it. This score keeps the final confidence (a confident
  answer) but charges every fall in it and every change of mind, so a chain that reaches the
  answer steadily beats one that stumbles onto it.
- `final_confidence`: p_K(a) alone (ignores the path).
- `stability`: 1 - the normalized sum of drops and mind changes (ignores the final confidence).

Ties are broken by majority support (how many candidates share the answer), then by the
candidate's index (earlier first), so the order is deterministic.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from services.prober.core.trajectory import Trajectory


@dataclass(frozen=True)
class SelectionConfig:
    scorer: str = "cop"
    drop_weight: float = 1.0
    change_weight: float = 0.5


def _drops(t: Trajectory) -> float:
    curve = t.final_confidence
    return sum(max(0.0, a - b) for a, b in itertools.pairwise(curve))


def _cop(t: Trajectory, c: SelectionConfig) -> float:
    steps = max(1, len(t.steps) - 1)
    return (
        t.final_confidence[-1]
        - c.drop_weight * _drops(t)
        - c.change_weight * t.mind_changes / steps
    )


def _final(t: Trajectory, c: SelectionConfig) -> float:
    return t.final_confidence[-1]


def _stability(t: Trajectory, c: SelectionConfig) -> float:
    steps = max(1, len(t.steps) - 1)
    return 1.0 - (_drops(t) + t.mind_changes) / (steps + 1)


SCORERS: dict[str, Callable[[Trajectory, SelectionConfig], float]] = {
    "cop": _cop,
    "final_confidence": _final,
    "stability": _stability,
}


@dataclass(frozen=True)
class Ranked:
    index: int
    answer: str
    score: float


def majority_answer(trajectories: list[Trajectory]) -> str:
    """Most frequent final answer; ties go to the answer seen first."""
    counts = Counter(t.final_answer for t in trajectories)
    first = {t.final_answer: i for i, t in reversed(list(enumerate(trajectories)))}
    return max(counts, key=lambda a: (counts[a], -first[a]))


def rank(trajectories: list[Trajectory], config: SelectionConfig | None = None) -> list[Ranked]:
    """Candidates best first."""
    config = config or SelectionConfig()
    if config.scorer not in SCORERS:
        raise ValueError(f"unknown scorer {config.scorer!r}")
    support = Counter(t.final_answer for t in trajectories)
    scored = [
        Ranked(i, t.final_answer, SCORERS[config.scorer](t, config))
        for i, t in enumerate(trajectories)
    ]
    return sorted(scored, key=lambda r: (-r.score, -support[r.answer], r.index))
