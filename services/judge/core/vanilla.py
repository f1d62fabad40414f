"""The vanilla chain-of-thought judge: pairwise (one call: reasoning, then [[A]]/[[B]]/[[C]]),
or pointwise (each response rated 1-10 on its own; the higher rating wins, equal ratings tie).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.judge.core.judging import JudgeContext, Outcome, Pair
from services.judge.core.prompts import pointwise_prompt
from services.judge.core.verdicts import Winner

MODES = ("pairwise", "pointwise")


@dataclass(frozen=True)
class VanillaConfig:
    mode: str = "pairwise"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")


def pointwise_winner(score_first: float | None, score_second: float | None) -> Winner:
    if score_first is None or score_second is None:
        return Winner.UNPARSEABLE
    if score_first == score_second:
        return Winner.TIE
    return Winner.A if score_first > score_second else Winner.B


class VanillaJudge:
    name = "vanilla"

    def __init__(self, ctx: JudgeContext, config: VanillaConfig | None = None) -> None:
        self.ctx = ctx
        self.config = config or VanillaConfig()

    def judge(self, pairs: Sequence[Pair]) -> list[Outcome]:
        if self.config.mode == "pointwise":
            return self._pointwise(pairs)
        return self.ctx.final(pairs)

    def _pointwise(self, pairs: Sequence[Pair]) -> list[Outcome]:
        prompts = [
            pointwise_prompt(p.instruction, response)
            for p in pairs
            for response in (p.first, p.second)
        ]
        rated = self.ctx.judge("judge", prompts, fmt="pointwise")
        outcomes = []
        for i in range(len(pairs)):
            (first, first_text), (second, second_text) = rated[2 * i], rated[2 * i + 1]
            outcomes.append(
                Outcome(
                    pointwise_winner(first.score, second.score),
                    f"{first_text}\n\n{second_text}",
                    prompts[2 * i],
                    {"scores": [first.score, second.score]},
                )
            )
        return outcomes

    def planned_calls(self, pairs: int, instructions: int, orders: int) -> dict[str, int]:
        if self.config.mode == "pointwise":
            return {"judge": 2 * pairs}  # a response's rating does not depend on the order
        return {"judge": pairs * orders}
