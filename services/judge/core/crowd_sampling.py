"""Crowd rejection sampling and judge distillation: CCE's two uses beyond evaluation.

Crowd rejection sampling (CCE paper, Sec. "CCE for training"): for each prompt, N policies
answer; every pair of answers is judged in both orders by the judge strategy (CCE by
default), and the answer with the best Copeland score (win 1, tie 1/2) becomes the SFT label
(first policy on a tie). The worst answer, when strictly worse, gives a DPO pair.

Judge distillation: the final CCE judgments (chain of thought + verdict) as SFT targets for
the plain pairwise prompt, so a student learns to judge as well without a crowd. Only
parseable judgments are kept, and on labeled items only those that agree with the label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from services.judge.core.datasets import PairItem
from services.judge.core.evaluation import ItemResult, judge_items
from services.judge.core.judging import JudgeContext, Strategy
from services.judge.core.metrics import unswap
from services.judge.core.prompts import pairwise_prompt
from services.judge.core.verdicts import Winner
from services.llm.base import SamplingParams

POINTS = {Winner.A: (1.0, 0.0), Winner.B: (0.0, 1.0), Winner.TIE: (0.5, 0.5)}


@dataclass(frozen=True)
class SamplingConfig:
    """How each policy answers the prompts."""

    max_tokens: int = 512
    temperature: float = 0.7
    seed: int = 0


@dataclass
class Selection:
    prompt: str
    policies: list[str]
    responses: list[str]
    scores: list[float]  # Copeland points
    judgments: int = 0  # single-order judgments made (both orders of every match)
    parsed: int = 0  # of those, the ones whose verdict parsed (the rest score as ties)

    @property
    def best(self) -> int:
        return max(range(len(self.scores)), key=lambda i: (self.scores[i], -i))

    @property
    def worst(self) -> int:
        return min(range(len(self.scores)), key=lambda i: (self.scores[i], -i))

    def record(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "responses": [
                {"policy": p, "text": t, "score": s}
                for p, t, s in zip(self.policies, self.responses, self.scores, strict=True)
            ],
            "best": self.best,
            "worst": self.worst,
        }


def copeland(n: int, matches: Sequence[tuple[int, int, Winner]]) -> list[float]:
    scores = [0.0] * n
    for i, j, winner in matches:
        left, right = POINTS.get(winner, (0.0, 0.0))
        scores[i] += left
        scores[j] += right
    return scores


def crowd_rejection_sampling(
    ctx: JudgeContext,
    strategy: Strategy,
    prompts: Sequence[str],
    policies: Sequence[str],
    config: SamplingConfig,
    rule: str = "net_vote",
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Selection]:
    params = SamplingParams(
        max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed
    ).validate("sampling")
    chats = [[{"role": "user", "content": p}] for p in prompts]
    answers = [ctx.generate("policy", chats, params, model) for model in policies]
    selections = []
    for k, prompt in enumerate(prompts):
        responses = [a[k].strip() for a in answers]
        matches = list(combinations(range(len(policies)), 2))
        results: list[ItemResult] = judge_items(
            strategy,
            [PairItem(prompt, responses[i], responses[j], None) for i, j in matches],
            both_orders=True,
            rule=rule,
        )
        scores = copeland(
            len(policies), [(i, j, r.verdict) for (i, j), r in zip(matches, results, strict=True)]
        )
        outcomes = [o for r in results for o in r.outcomes]
        parsed = sum(o.winner != Winner.UNPARSEABLE for o in outcomes)
        selections.append(
            Selection(prompt, list(policies), responses, scores, len(outcomes), parsed)
        )
        if on_progress is not None:
            on_progress(k + 1, len(prompts))
    return selections


def sft_rows(selections: Sequence[Selection]) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": s.prompt},
                {"role": "assistant", "content": s.responses[s.best]},
            ]
        }
        for s in selections
    ]


def preference_rows(selections: Sequence[Selection]) -> list[dict[str, Any]]:
    return [
        {"prompt": s.prompt, "chosen": s.responses[s.best], "rejected": s.responses[s.worst]}
        for s in selections
        if s.scores[s.best] > s.scores[s.worst]
    ]


def distillation_rows(
    items: Sequence[PairItem], results: Sequence[ItemResult], verdict_format: str
) -> list[dict[str, Any]]:
    """messages rows: [system, user] = the plain pairwise prompt of one order, assistant = the
    strategy's judgment of that order."""
    rows = []
    for item, result in zip(items, results, strict=True):
        orders = [(item.response_a, item.response_b, result.forward, False)]
        if result.swapped is not None:
            orders.append((item.response_b, item.response_a, result.swapped, True))
        for first, second, outcome, swapped in orders:
            if outcome.winner == Winner.UNPARSEABLE:
                continue
            original = unswap(outcome.winner) if swapped else outcome.winner
            if item.label is not None and original != item.label:
                continue
            prompt = pairwise_prompt(item.instruction, first, second, verdict_format)
            rows.append(
                {"messages": [*prompt, {"role": "assistant", "content": outcome.text.strip()}]}
            )
    return rows
