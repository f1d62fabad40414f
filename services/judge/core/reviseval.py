"""RevisEval (Zhang et al., ICLR 2025): response-adapted references.

Stage 1, revision: a reviser LLM rewrites a response into r* = R(x, y), keeping what is good
and fixing what is not (the paper's Eq. 2); r* is close to y by construction, unlike a fixed
reference. Stage 2, reference-based evaluation with r*: an LLM judge (Eq. 3) or a classic
metric M(y, r*) (Eq. 4: BLEU, ROUGE, BERTScore).

Pairwise variants (which response(s) the reference is adapted from):
- single:             r* = R(x, y_A), the response shown first; the both-order evaluation
                      adapts it to each response in turn.
- select_then_revise: a vanilla judgment picks the better response, r* = R(x, y_winner)
                      (a tie or unparseable pick falls back to combine).
- combine:            r* = R(x, y_A, y_B): one reference that merges both responses' strengths.
With judge_by = a metric, each response is scored against its own revision under `single`
(a response that needs less revision scores higher), and against the shared r* otherwise;
the higher score wins and equal scores tie.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from services.judge.core.judging import JudgeContext, Outcome, Pair
from services.judge.core.prompts import pairwise_prompt
from services.judge.core.text_metrics import METRICS, score_all
from services.judge.core.verdicts import Winner
from services.llm.base import Message

VARIANTS = ("single", "select_then_revise", "combine")
JUDGES = ("llm", *METRICS)

REVISE_SYSTEM = (
    "You are a meticulous editor. Revise the AI assistant's response below so that it answers "
    "the user's question as well as possible: correct factual and logical errors, complete "
    "what is missing, remove what is irrelevant or wrong, and keep every part that is already "
    "good unchanged. Output only the revised response, with no comments."
)
COMBINE_SYSTEM = (
    "You are a meticulous editor. Two AI assistants answered the user's question below. Write "
    "one revised response that keeps the correct and useful parts of both, corrects their "
    "errors and completes what both miss. Output only the revised response, with no comments."
)


@dataclass(frozen=True)
class RevisEvalConfig:
    variant: str = "single"
    reviser_model: str = ""  # empty: the judge model
    reviser_max_tokens: int = 512
    judge_by: str = "llm"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}")
        if self.judge_by not in JUDGES:
            raise ValueError(f"judge_by must be one of {', '.join(JUDGES)}")
        if not 1 <= self.reviser_max_tokens <= 32768:
            raise ValueError("reviser_max_tokens must be in 1..32768")


def revise_prompt(instruction: str, response: str) -> list[Message]:
    user = (
        f"[User Question]\n{instruction}\n\n"
        f"[The Start of Assistant's Response]\n{response}\n[The End of Assistant's Response]"
    )
    return [{"role": "system", "content": REVISE_SYSTEM}, {"role": "user", "content": user}]


def combine_prompt(instruction: str, first: str, second: str) -> list[Message]:
    user = (
        f"[User Question]\n{instruction}\n\n"
        f"[The Start of Assistant A's Response]\n{first}\n[The End of Assistant A's Response]\n\n"
        f"[The Start of Assistant B's Response]\n{second}\n[The End of Assistant B's Response]"
    )
    return [{"role": "system", "content": COMBINE_SYSTEM}, {"role": "user", "content": user}]


class References:
    """Response-adapted references for pairs (stage `revise`, plus `select` for
    select_then_revise)."""

    def __init__(self, ctx: JudgeContext, config: RevisEvalConfig) -> None:
        self.ctx = ctx
        self.config = config

    def _revise(self, prompts: Sequence[list[Message]]) -> list[str]:
        params = self.ctx.settings.params(max_tokens=self.config.reviser_max_tokens)
        model = self.config.reviser_model or None
        return [t.strip() for t in self.ctx.generate("revise", prompts, params, model)]

    def own(self, pairs: Sequence[Pair]) -> list[tuple[str, str]]:
        """Each response's own revision: (R(x, y_A), R(x, y_B))."""
        texts = self._revise(
            [revise_prompt(p.instruction, y) for p in pairs for y in (p.first, p.second)]
        )
        return [(texts[2 * i], texts[2 * i + 1]) for i in range(len(pairs))]

    def shared(self, pairs: Sequence[Pair]) -> list[str]:
        """One reference per pair, by the configured variant."""
        variant = self.config.variant
        if variant == "single":
            return self._revise([revise_prompt(p.instruction, p.first) for p in pairs])
        picks: list[str | None] = [None] * len(pairs)
        if variant == "select_then_revise":
            fmt = self.ctx.settings.verdict_format
            verdicts = self.ctx.judge(
                "select", [pairwise_prompt(p.instruction, p.first, p.second, fmt) for p in pairs]
            )
            picks = [
                {Winner.A: p.first, Winner.B: p.second}.get(v.winner)
                for p, (v, _) in zip(pairs, verdicts, strict=True)
            ]
        prompts = [
            revise_prompt(p.instruction, pick)
            if pick is not None
            else combine_prompt(p.instruction, p.first, p.second)
            for p, pick in zip(pairs, picks, strict=True)
        ]
        return self._revise(prompts)

    def planned_calls(self, pairs: int, orders: int) -> dict[str, int]:
        calls = {"revise": pairs * orders}
        if self.config.variant == "select_then_revise":
            calls["select"] = pairs * orders
        return calls


class RevisEvalJudge:
    name = "reviseval"

    def __init__(self, ctx: JudgeContext, config: RevisEvalConfig | None = None) -> None:
        self.ctx = ctx
        self.config = config or RevisEvalConfig()
        self.references = References(ctx, self.config)

    def judge(self, pairs: Sequence[Pair]) -> list[Outcome]:
        if self.config.judge_by != "llm":
            return self._by_metric(pairs)
        return self.ctx.final(pairs, references=self.references.shared(pairs))

    def _by_metric(self, pairs: Sequence[Pair]) -> list[Outcome]:
        metric = self.config.judge_by
        if self.config.variant == "single":
            refs = self.references.own(pairs)
        else:
            refs = [(r, r) for r in self.references.shared(pairs)]
        candidates = [y for p in pairs for y in (p.first, p.second)]
        scores = score_all(candidates, [r for pair in refs for r in pair], (metric,))
        outcomes = []
        for i, (ref_first, ref_second) in enumerate(refs):
            first, second = scores[2 * i][metric], scores[2 * i + 1][metric]
            winner = Winner.TIE if first == second else Winner.A if first > second else Winner.B
            details = {"scores": [first, second], "references": [ref_first, ref_second]}
            outcomes.append(Outcome(winner, json.dumps({metric: [first, second]}), [], details))
        return outcomes

    def planned_calls(self, pairs: int, instructions: int, orders: int) -> dict[str, int]:
        if self.config.judge_by != "llm":
            if self.config.variant == "single":
                return {"revise": 2 * pairs}  # each response's own revision, in either order
            return self.references.planned_calls(pairs, orders)
        return {**self.references.planned_calls(pairs, orders), "judge": pairs * orders}
