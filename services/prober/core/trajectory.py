"""Chain-of-Probe trajectories: the model's answer and confidence before the first reasoning
step and after each one, with the signals the paper reads from them.

Early answering: the answer at step 0 (before any reasoning) already equals the final one.
Mind changes: steps k >= 1 whose answer differs from step k-1's. A correct final answer is
flagged as resting on unstable reasoning when the model changed its mind along the way or
its confidence in the final answer fell by more than `drop_threshold` at some step.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProbeStep:
    step: int  # 0: before the first reasoning step
    answer: str
    confidence: float  # probability of `answer`
    distribution: dict[str, float] = field(default_factory=dict)  # options -> probability


@dataclass
class Trajectory:
    steps: list[ProbeStep]
    early_answer: bool
    mind_changes: int
    change_positions: list[int]
    final_answer: str
    final_confidence: list[float]  # probability of the final answer at each step
    correct: bool | None = None  # None without a gold answer
    unstable: bool = False

    @property
    def flagged(self) -> bool:
        """A correct answer resting on unstable reasoning."""
        return bool(self.correct) and self.unstable


@dataclass(frozen=True)
class TrajectoryConfig:
    drop_threshold: float = 0.2  # a fall in final-answer confidence this large is unstable


def final_answer_confidence(step: ProbeStep, final: str) -> float:
    if step.distribution:
        return step.distribution.get(final, 0.0)
    return step.confidence if step.answer == final else 0.0


def build_trajectory(
    steps: list[ProbeStep], gold: str | None = None, config: TrajectoryConfig | None = None
) -> Trajectory:
    if not steps:
        raise ValueError("a trajectory needs at least the step-0 probe")
    config = config or TrajectoryConfig()
    final = steps[-1].answer
    changes = [s.step for prev, s in itertools.pairwise(steps) if s.answer != prev.answer]
    curve = [final_answer_confidence(s, final) for s in steps]
    biggest_drop = max((a - b for a, b in itertools.pairwise(curve)), default=0.0)
    return Trajectory(
        steps=steps,
        early_answer=steps[0].answer == final,
        mind_changes=len(changes),
        change_positions=changes,
        final_answer=final,
        final_confidence=curve,
        correct=None if gold is None else final == gold,
        unstable=bool(changes) or biggest_drop > config.drop_threshold,
    )


def summarize(trajectories: list[Trajectory]) -> dict[str, object]:
    """Dataset-level numbers: early-answering rate overall and by number of reasoning steps,
    mind changes, accuracy and correct answers flagged as resting on unstable reasoning."""
    total = len(trajectories)
    by_steps: dict[int, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_steps[len(t.steps) - 1].append(t)
    graded = [t for t in trajectories if t.correct is not None]
    correct = [t for t in graded if t.correct]
    return {
        "items": total,
        "early_answering_rate": sum(t.early_answer for t in trajectories) / total if total else 0,
        "early_answering_by_steps": {
            str(k): {"items": len(v), "rate": sum(t.early_answer for t in v) / len(v)}
            for k, v in sorted(by_steps.items())
        },
        "mean_mind_changes": sum(t.mind_changes for t in trajectories) / total if total else 0,
        "accuracy": len(correct) / len(graded) if graded else None,
        "correct_but_unstable": sum(t.flagged for t in trajectories),
        "correct_but_unstable_rate": (
            sum(t.flagged for t in correct) / len(correct) if correct else None
        ),
    }
