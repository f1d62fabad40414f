"""Judging labeled or unlabeled pairs in both orders, and the run's reliability report.

Each item is judged as (A, B) and, by default, as (B, A); the swapped verdict is mapped back
to the original slots and the two are combined (services.judge.core.metrics.combine). The
report gives accuracy with and without ties (a TIE counts half), its bootstrap interval,
Cohen's kappa, each order's own accuracy, order agreement, the first-slot win rate, the tie
and unparseable rates, and the calls and tokens per stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.judge.core.datasets import PairItem
from services.judge.core.judging import Outcome, Pair, Strategy
from services.judge.core.metrics import (
    accuracy,
    bootstrap_ci,
    cohen_kappa,
    combine,
    correctness,
    order_stats,
    unswap,
)
from services.judge.core.verdicts import Winner
from services.llm.base import Usage


@dataclass
class ItemResult:
    verdict: Winner  # combined, in the original slots
    forward: Outcome
    swapped: Outcome | None  # the (B, A) judgment, its winner in the swapped slots

    @property
    def outcomes(self) -> list[Outcome]:
        """The single-order judgments: forward, then swapped when both orders were judged."""
        return [self.forward] if self.swapped is None else [self.forward, self.swapped]

    def record(self, index: int, item: PairItem) -> dict[str, Any]:
        row: dict[str, Any] = {
            "index": index,
            "label": None if item.label is None else str(item.label),
            "verdict": str(self.verdict),
            "forward": {
                "winner": str(self.forward.winner),
                "text": self.forward.text,
                **self.forward.details,
            },
        }
        if self.swapped is not None:
            row["swapped"] = {
                "winner": str(unswap(self.swapped.winner)),  # in the original slots
                "text": self.swapped.text,
                **self.swapped.details,
            }
        return row


def judge_items(
    strategy: Strategy, items: Sequence[PairItem], both_orders: bool = True, rule: str = "net_vote"
) -> list[ItemResult]:
    """One strategy call for all items in both orders."""
    pairs = [Pair(it.instruction, it.response_a, it.response_b) for it in items]
    if both_orders:
        pairs += [Pair(it.instruction, it.response_b, it.response_a) for it in items]
    outcomes = strategy.judge(pairs)
    n = len(items)
    results = []
    for i in range(n):
        forward = outcomes[i]
        swapped = outcomes[n + i] if both_orders else None
        verdict = (
            combine(forward.winner, unswap(swapped.winner), rule)
            if swapped is not None
            else forward.winner
        )
        results.append(ItemResult(verdict, forward, swapped))
    return results


def report(
    items: Sequence[PairItem], results: Sequence[ItemResult], usage: Usage | None = None
) -> dict[str, Any]:
    labeled = [(it, r) for it, r in zip(items, results, strict=True) if it.label is not None]
    predictions = [r.verdict for _, r in labeled]
    labels = [it.label for it, _ in labeled]
    parsed = sum(r.verdict != Winner.UNPARSEABLE for r in results)
    out: dict[str, Any] = {
        "parse_rate": parsed / len(results) if results else None,
        "items": len(items),
        "labeled": len(labeled),
    }
    if labeled:
        out.update(accuracy(predictions, labels))
        out["accuracy_ci95"] = (
            list(
                bootstrap_ci([correctness(p, y) for p, y in zip(predictions, labels, strict=True)])
            )
            if out["accuracy"] is not None
            else None
        )
        out["cohen_kappa"] = cohen_kappa(predictions, labels)
        out["forward_accuracy"] = accuracy([r.forward.winner for _, r in labeled], labels)[
            "accuracy"
        ]
    forward = [r.forward.winner for r in results]
    swapped = [r.swapped.winner for r in results if r.swapped is not None]
    if swapped:
        stats = order_stats(forward, swapped)
        out.update(
            order_agreement=stats.order_agreement,
            first_slot_win_rate=stats.first_slot_win_rate,
            single_order_tie_rate=stats.tie_rate,
        )
        if labeled:
            out["swapped_accuracy"] = accuracy(
                [unswap(r.swapped.winner) for _, r in labeled if r.swapped is not None], labels
            )["accuracy"]
    else:
        singles = [w for w in forward if w != Winner.UNPARSEABLE]
        out["first_slot_win_rate"] = (
            sum(w == Winner.A for w in singles) / len(singles) if singles else None
        )
    outcomes = [o for r in results for o in r.outcomes]
    if any("crowd_fallback" in o.details for o in outcomes):
        # CCE judgments made without crowd context because no crowd judgment parsed
        out["crowd_fallback_rate"] = sum(bool(o.details["crowd_fallback"]) for o in outcomes) / len(
            outcomes
        )
    out["verdicts"] = {
        str(w): sum(r.verdict == w for r in results)
        for w in (Winner.A, Winner.B, Winner.TIE, Winner.UNPARSEABLE)
    }
    if usage is not None:
        out["usage"] = {
            "calls": usage.calls,
            "cached_calls": usage.cached_calls,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "by_stage": usage.by_stage,
        }
    return out


def evaluate(
    strategy: Strategy,
    items: Sequence[PairItem],
    both_orders: bool = True,
    rule: str = "net_vote",
    batch_size: int = 32,
    on_batch: Callable[[list[ItemResult]], None] | None = None,
) -> list[ItemResult]:
    """judge_items over batches of items (each batch is one strategy call); on_batch gets
    the results so far after each."""
    results: list[ItemResult] = []
    for start in range(0, len(items), batch_size):
        results += judge_items(strategy, items[start : start + batch_size], both_orders, rule)
        if on_batch is not None:
            on_batch(results)
    return results
