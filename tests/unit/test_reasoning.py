import pytest

from services.common.reasoning import (
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


@pytest.mark.parametrize(
    ("solution", "answer", "value"),
    [
        ("The answer is $\\frac{1}{2}$.", "(1)/(2)", "1/2"),  # LaTeX fraction, not its 1
        ("The answer is 3 + 4 = 7.", "7", "7"),  # an equation's right-hand side
        ("The answer is \u22123", "-3", "-3"),  # Unicode minus
        ("so \\boxed{x = 4}", "4", "4"),
        ("so \\boxed{\\text{12 apples}}", "12", "12"),
        ("The answer is $118 000", "118 000", "118000"),  # a space between thousands
        ("The answer is 2 1/2 cups.", "2 1/2", "5/2"),  # a mixed number
        ("The answer is 1,2,3", "1,2,3", "1,2,3"),  # a list, not one hundred twenty-three
        ("The answer is not 5; it is 6.", "6", "6"),
        ("The answer is \\$18.", "18", "18"),
    ],
)
def test_each_answer_form_reduces_to_its_value(solution: str, answer: str, value: str) -> None:
    assert extract_answer(solution) == answer
    assert canonical(answer) == value


def test_not_five_is_not_counted_as_five() -> None:
    assert not is_correct("The answer is not 5; it is 6.", "5")
    assert is_correct("The answer is not 5; it is 6.", "#### 6")
    assert not answers_match("1,2,3", "123")


def test_a_cut_off_solution_has_no_answer() -> None:
    from services.common.reasoning import Outcome, grade_answer

    start = "Natalia sold 48/2 = 24 clips in May. "
    for cut in (start + "Then she sold 48 + 24 =", start + "Then she sold", "She had 5 + <<5"):
        assert extract_answer(cut) is None, cut
        assert grade_answer(cut, "72") == Outcome.NO_ANSWER
    finished = start + "Altogether she sold 48+24 = 72 clips in April and May."
    assert grade_answer(finished, "72") == Outcome.CORRECT
    assert grade_answer(finished, "71") == Outcome.WRONG
    assert extract_answer("He pays 40*2=$<<40*2=80>>80 on gas every month,") == "80"
    assert extract_answer("Mr. McPherson will pay $840 which Mr. Smith will raise") == "840"


def test_probe_answers_reduce_to_their_values() -> None:
    """The prober compares canonical probe answers: one value, one spelling."""
    assert canonical(": 120") == canonical("120") == canonical("120 pages.") == "120"
    assert canonical("3 * 2 = 6 pages") == canonical("6") == "6"
    assert canonical("Tuesday") == "tuesday"


def test_gsm8k_references_with_and_without_their_answer_line() -> None:
    rows = json_lines(GSM8K_TRAIN)
    bodies = [(row["answer"].rsplit("####", 1)[0], gsm8k_answer(row["answer"])) for row in rows]
    found = [extract_answer(body) for body, _ in bodies]
    assert found.count(None) == 0  # every reference reads as finished
    right = sum(answers_match(f, gold) for f, (_, gold) in zip(found, bodies, strict=True))
    assert right == 7263  # the last number is the answer in 97.2% of them
