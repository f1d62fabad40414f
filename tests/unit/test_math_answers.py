import pytest

from services.common.math_answers import (
    answers_match,
    canonical,
    extract_answer,
    extract_boxed,
    gsm8k_answer,
    is_correct,
    parse_number,
    strip_boxed,
)
from tests.datasets import GSM8K_TRAIN, json_lines


def test_recovers_the_answer_of_every_gsm8k_reference_solution() -> None:
    rows = json_lines(GSM8K_TRAIN)
    assert len(rows) == 7473
    for row in rows:
        marked = row["answer"].rsplit("####", 1)[1].strip()
        found = extract_answer(row["answer"])
        assert found == marked
        assert parse_number(found) is not None, found
        # the same solution ending with \boxed{} or "The answer is" reads the same answer
        body = row["answer"].rsplit("####", 1)[0]
        assert answers_match(extract_answer(body + f"\\boxed{{{marked}}}"), marked)
        assert answers_match(extract_answer(body + f"The answer is {marked}."), marked)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("1,000", "1000.0", True),
        ("\\frac{3}{4}", "0.75", True),
        ("3/4", "\\dfrac{3}{4}", True),
        ("$18", "18", True),
        ("50\\%", "50", True),
        ("-2.5", "-5/2", True),
        ("18", "18.01", False),
        ("x + 1", "X+1", False),
        ("Paris", "paris.", True),
    ],
)
def test_equivalence(a: str, b: str, same: bool) -> None:
    assert answers_match(a, b) is same


def test_boxed_extraction_balances_braces_and_takes_the_last() -> None:
    text = "first \\boxed{1} then \\boxed{\\frac{1}{2}} done"
    assert extract_boxed(text) == "\\frac{1}{2}"
    assert strip_boxed(text) == "first 1 then \\frac{1}{2} done"
    assert extract_boxed("\\boxed{unclosed") is None


def test_extraction_order_and_fallbacks() -> None:
    assert extract_answer("so 3 + 4 = 7 \\boxed{7}\n#### 8") == "7"
    assert gsm8k_answer("a\n#### 1,200") == "1,200"
    assert extract_answer("He has 5 apples and 3 pears. The answer is: $8.") == "8"
    assert extract_answer("5 then 6 then 11") == "11"
    assert extract_answer("no numbers here") is None
    assert canonical("42.0") == "42" and canonical("0.5") == "1/2"
    assert is_correct("so the total is 72", "Natalia ...\n#### 72")
    assert not is_correct("so the total is 71", "#### 72")
    assert not answers_match(None, "1")
