"""Majority vote @k: k sampled chain-of-thought judgments of the same pair (seeds seed..seed+k-1
at the configured temperature); the most frequent parsed verdict wins, a tie for the top is a
TIE, and k unparseable judgments are UNPARSEABLE."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from services.judge.core.judging import JudgeContext, Outcome, Pair
from services.judge.core.prompts import pairwise_prompt
from services.judge.core.verdicts import Winner


@dataclass(frozen=True)
class MajorityConfig:
    k: int = 5
    temperature: float = 0.7

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 64:
            raise ValueError("k must be in 1..64")
        if not 0.0 < self.temperature <= 2.0:
            raise ValueError("temperature must be in (0, 2] (votes of a greedy judge agree)")


def majority(votes: Sequence[Winner]) -> Winner:
    counts = Counter(v for v in votes if v != Winner.UNPARSEABLE)
    if not counts:
        return Winner.UNPARSEABLE
    (top, n), *rest = counts.most_common()
    return Winner.TIE if rest and rest[0][1] == n else top


class MajorityJudge:
    name = "majority"

    def __init__(self, ctx: JudgeContext, config: MajorityConfig | None = None) -> None:
        self.ctx = ctx
        self.config = config or MajorityConfig()

    def judge(self, pairs: Sequence[Pair]) -> list[Outcome]:
        fmt = self.ctx.settings.verdict_format
        prompts = [pairwise_prompt(p.instruction, p.first, p.second, fmt) for p in pairs]
        rounds = [
            self.ctx.judge(
                "judge",
                prompts,
                temperature=self.config.temperature,
                seed=self.ctx.settings.seed + j,
            )
            for j in range(self.config.k)
        ]
        outcomes = []
        for i, prompt in enumerate(prompts):
            votes = [r[i][0].winner for r in rounds]
            outcomes.append(
                Outcome(
                    majority(votes),
                    "\n\n".join(r[i][1] for r in rounds),
                    prompt,
                    {"votes": [str(v) for v in votes]},
                )
            )
        return outcomes

    def planned_calls(self, pairs: int, instructions: int, orders: int) -> dict[str, int]:
        return {"judge": pairs * orders * self.config.k}
