"""Reliability metrics of a judge run: both-order combination, order agreement, first-slot
win rate, accuracy with and without ties, Cohen's kappa and bootstrap confidence intervals.

Conventions: a verdict in the swapped order (the two responses exchanged) is mapped back to
the original slots before it is compared or combined. A tie counts as half correct in
`accuracy` and is left out of `accuracy_no_ties`. An UNPARSEABLE verdict is never correct
and never a tie; it is counted in `unparseable_rate`. A metric with nothing to measure (no
verdict parsed, no pair parsed in both orders) is None, "undefined", never 0.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from services.judge.core.verdicts import Winner

COMBINE_RULES = ("net_vote", "disagreement_tie")
_SWAP = {Winner.A: Winner.B, Winner.B: Winner.A}


def unswap(winner: Winner) -> Winner:
    """A swapped-order verdict in the original order's slots."""
    return _SWAP.get(winner, winner)


def combine(forward: Winner, swapped_back: Winner, rule: str = "net_vote") -> Winner:
    """One verdict from both orders (swapped_back already unswapped).

    net_vote: +1 for A, -1 for B, 0 for a tie, summed over the parseable orders; the sign
    decides (0 is a tie). disagreement_tie: agreeing orders give their verdict, disagreeing
    ones a tie; an unparseable order makes the pair unparseable.
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"rule must be one of {COMBINE_RULES}")
    votes = [w for w in (forward, swapped_back) if w != Winner.UNPARSEABLE]
    if rule == "disagreement_tie":
        if len(votes) < 2:
            return Winner.UNPARSEABLE
        return forward if forward == swapped_back else Winner.TIE
    if not votes:
        return Winner.UNPARSEABLE
    total = sum({Winner.A: 1, Winner.B: -1}.get(w, 0) for w in votes)
    return Winner.A if total > 0 else Winner.B if total < 0 else Winner.TIE


@dataclass(frozen=True)
class OrderStats:
    order_agreement: float | None  # pairs whose two orders agree, among pairs with both parseable
    first_slot_win_rate: float | None  # single-order judgments won by the response shown first
    tie_rate: float | None  # single-order judgments that are ties


def order_stats(forward: Sequence[Winner], swapped: Sequence[Winner]) -> OrderStats:
    """forward[i], swapped[i]: the raw verdicts of pair i in each order (not unswapped)."""
    both = [
        (f, unswap(s))
        for f, s in zip(forward, swapped, strict=True)
        if Winner.UNPARSEABLE not in (f, s)
    ]
    singles = [w for w in (*forward, *swapped) if w != Winner.UNPARSEABLE]
    return OrderStats(
        sum(f == s for f, s in both) / len(both) if both else None,
        sum(w == Winner.A for w in singles) / len(singles) if singles else None,
        sum(w == Winner.TIE for w in singles) / len(singles) if singles else None,
    )


def correctness(prediction: Winner, label: Winner) -> float:
    if prediction == Winner.TIE:
        return 0.5
    return float(prediction == label)


def parsed_any(predictions: Sequence[Winner]) -> bool:
    return any(p != Winner.UNPARSEABLE for p in predictions)


def accuracy(predictions: Sequence[Winner], labels: Sequence[Winner]) -> dict[str, float | None]:
    """accuracy (a tie counts half, unparseable counts wrong) and accuracy_no_ties are None
    when no verdict was parsed: a judge that never answered has no accuracy."""
    scores = [correctness(p, y) for p, y in zip(predictions, labels, strict=True)]
    decided = [
        p == y for p, y in zip(predictions, labels, strict=True) if p in (Winner.A, Winner.B)
    ]
    n = len(scores)
    return {
        "accuracy": sum(scores) / n if parsed_any(predictions) else None,
        "accuracy_no_ties": sum(decided) / len(decided) if decided else None,
        "tie_rate": sum(p == Winner.TIE for p in predictions) / n if n else None,
        "unparseable_rate": sum(p == Winner.UNPARSEABLE for p in predictions) / n if n else None,
    }


def cohen_kappa(predictions: Sequence[Winner], labels: Sequence[Winner]) -> float | None:
    """(p_o - p_e) / (1 - p_e) over the categories that occur in either sequence; None when
    no verdict was parsed."""
    n = len(predictions)
    if not parsed_any(predictions):
        return None
    observed = sum(p == y for p, y in zip(predictions, labels, strict=True)) / n
    left, right = Counter(predictions), Counter(labels)
    expected = sum(left[c] * right[c] for c in set(left) | set(right)) / (n * n)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def bootstrap_ci(
    values: Sequence[float], resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of values under resampling with replacement."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    low = means[int((alpha / 2) * (resamples - 1))]
    high = means[int((1 - alpha / 2) * (resamples - 1))]
    return (low, high)
