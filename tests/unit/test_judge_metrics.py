"""Judge metrics on the real sets in data/judge with rule-based judges."""

import json

import pytest

from services.judge.core.datasets import load_pairs
from services.judge.core.metrics import (
    accuracy,
    bootstrap_ci,
    cohen_kappa,
    combine,
    order_stats,
    unswap,
)
from services.judge.core.verdicts import Winner
from tests.datasets import JUDGE_DIR

DATA = JUDGE_DIR
A, B, TIE, BAD = Winner.A, Winner.B, Winner.TIE, Winner.UNPARSEABLE


def load(name: str):
    return load_pairs(json.loads((DATA / f"{name}.json").read_text()))


def longer_wins(first: str, second: str) -> Winner:
    return A if len(first) > len(second) else B if len(second) > len(first) else TIE


def test_always_a_judge_on_evalbiasbench() -> None:
    items = load("evalbiasbench")
    assert len(items) == 80 and {i.label for i in items} == {A}
    forward = [A] * len(items)
    swapped = [A] * len(items)  # the same judge shown (b, a)
    assert accuracy(forward, [i.label for i in items])["accuracy"] == 1.0  # original order
    stats = order_stats(forward, swapped)
    assert stats.order_agreement == 0.0 and stats.first_slot_win_rate == 1.0
    combined = [combine(f, unswap(s)) for f, s in zip(forward, swapped, strict=True)]
    assert set(combined) == {TIE}
    assert accuracy(combined, [i.label for i in items])["accuracy_no_ties"] is None  # all ties


@pytest.mark.parametrize(
    ("name", "expected", "ties"), [("llmbar_natural", 0.565, 1), ("mtbench_human_200", 0.6925, 5)]
)
def test_longer_answer_wins_floor(name: str, expected: float, ties: int) -> None:
    items = load(name)
    labels = [i.label for i in items]
    forward = [longer_wins(i.response_a, i.response_b) for i in items]
    swapped = [longer_wins(i.response_b, i.response_a) for i in items]
    combined = [combine(f, unswap(s)) for f, s in zip(forward, swapped, strict=True)]
    result = accuracy(combined, labels)
    assert result["accuracy"] == pytest.approx(expected)  # ties count half
    assert result["tie_rate"] == pytest.approx(ties / len(items))
    assert order_stats(forward, swapped).order_agreement == 1.0  # position-blind judge
    low, high = bootstrap_ci(
        [float(c == y) if c != TIE else 0.5 for c, y in zip(combined, labels, strict=True)]
    )
    assert low < expected < high


def test_combination_rules() -> None:
    assert combine(A, A) == A and combine(A, TIE) == A and combine(A, B) == TIE
    assert combine(BAD, B) == B and combine(BAD, BAD) == BAD
    assert combine(A, TIE, "disagreement_tie") == TIE
    assert combine(A, BAD, "disagreement_tie") == BAD
    with pytest.raises(ValueError):
        combine(A, A, "majority")


def test_accuracy_kappa_by_hand() -> None:
    predictions = [A, B, TIE, BAD]
    labels = [A, A, B, B]
    result = accuracy(predictions, labels)
    assert result == {
        "accuracy": 1.5 / 4,
        "accuracy_no_ties": 0.5,
        "tie_rate": 0.25,
        "unparseable_rate": 0.25,
    }
    # p_o = 1/4; p_e = (1*2 + 1*2) / 16 = 1/4 -> kappa 0
    assert cohen_kappa(predictions, labels) == pytest.approx(0.0)
    assert cohen_kappa([A, B, A, B], [A, B, A, B]) == 1.0
    # p_o = 3/4, p_e = (2*3 + 2*1)/16 = 1/2 -> (3/4 - 1/2) / (1/2) = 1/2
    assert cohen_kappa([A, A, B, B], [A, A, A, B]) == pytest.approx(0.5)


def test_dataset_formats() -> None:
    kiln = load_pairs([{"instruction": "i", "response_a": "x", "response_b": "y", "label": "tie"}])
    assert kiln[0].label == TIE
    reward = load_pairs([{"prompt": "p", "chosen": "c", "rejected": "r", "id": 3}])
    assert (reward[0].response_a, reward[0].label, reward[0].meta) == ("c", A, {"id": 3})
    from services.common.errors import InvalidInput

    with pytest.raises(InvalidInput):
        load_pairs([{"question": "q"}])
    with pytest.raises(InvalidInput):
        load_pairs([{"input": "i", "output_1": "a", "output_2": "b", "label": 3}])
