"""Criteria expansion: the vanilla pairwise judge, told to assess an expanded list of
criteria one by one before its verdict (the baseline CCE compares against)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.judge.core.judging import JudgeContext, Outcome, Pair

DEFAULT_CRITERIA = (
    "Instruction following: does the response do exactly what was asked, within its constraints?",
    "Correctness: are the facts, reasoning and computations right?",
    "Helpfulness: does it solve the user's actual problem?",
    "Relevance: does it stay on the question, without padding?",
    "Depth: does it cover the important aspects and edge cases?",
    "Level of detail: is the detail appropriate, neither missing nor excessive?",
    "Clarity: is it well organized and easy to follow?",
    "Harmlessness: does it avoid unsafe, biased or misleading content?",
)


@dataclass(frozen=True)
class CriteriaConfig:
    criteria: tuple[str, ...] = DEFAULT_CRITERIA

    def __post_init__(self) -> None:
        if not self.criteria or any(not c.strip() for c in self.criteria):
            raise ValueError("criteria must be non-empty strings")


class CriteriaJudge:
    name = "criteria"

    def __init__(self, ctx: JudgeContext, config: CriteriaConfig | None = None) -> None:
        self.ctx = ctx
        self.config = config or CriteriaConfig()

    def judge(self, pairs: Sequence[Pair]) -> list[Outcome]:
        return self.ctx.final(pairs, criteria=self.config.criteria)

    def planned_calls(self, pairs: int, instructions: int, orders: int) -> dict[str, int]:
        return {"judge": pairs * orders}
