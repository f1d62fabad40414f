import json

import pytest

from services.judge.core.verdicts import Winner, parse
from tests.datasets import JUDGE_DIR


@pytest.mark.parametrize(
    ("fmt", "text", "winner", "strength"),
    [
        ("mtbench", "A is vague; B is precise. [[B]]", Winner.B, 1),
        ("mtbench", "Format: [[A]], [[B]] or [[C]]. Both equal: [[C]]", Winner.TIE, 1),
        ("arena_hard", "My final verdict is: [[A>>B]]", Winner.A, 2),
        ("arena_hard", "[[B>A]]", Winner.B, 1),
        ("arena_hard", "[[A=B]]", Winner.TIE, 1),
        ("arena_hard", "[[A<B]]", Winner.B, 1),
        ("llmbar", "Reasoning... Output (a) misses it. Therefore Output (b)", Winner.B, 1),
        ("json", 'think first {"reason": "x", "winner": "A"}', Winner.A, 1),
        ("json", '{"winner": "B"} then revised: {"verdict": "tie"}', Winner.TIE, 1),
    ],
)
def test_pairwise_formats_read_the_stated_verdict(
    fmt: str, text: str, winner: Winner, strength: int
) -> None:
    verdict = parse(text, fmt)
    assert verdict.winner == winner and verdict.strength == strength and verdict.parsed


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("mtbench", "B is better."),
        ("arena_hard", "[[A>>A]]"),
        ("llmbar", "the first output"),
        ("json", '{"winner": "neither"}'),
        ("json", "{not json}"),
        ("pointwise", "good answer"),
    ],
)
def test_unparseable_is_explicit(fmt: str, text: str) -> None:
    verdict = parse(text, fmt)
    assert verdict.winner == Winner.UNPARSEABLE and not verdict.parsed and verdict.score is None


def test_pointwise_scores() -> None:
    assert parse("solid. [[7]]", "pointwise").score == 7.0
    assert parse("Rating: [[3]] ... on reflection Rating: 8.5", "pointwise").score == 8.5
    assert parse("Rating: 4", "pointwise").winner == Winner.NONE
    with pytest.raises(ValueError, match="unknown verdict format"):
        parse("x", "yaml")


def test_cli_parse_counts_unparseable(tmp_path) -> None:
    from typer.testing import CliRunner

    from services.cli.main import app

    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text('{"text": "x [[A>>B]]"}\n{"text": "no verdict"}\n"[[B=A]]"\n')
    result = CliRunner().invoke(app, ["judge", "parse", str(outputs), "--format", "arena_hard"])
    assert result.exit_code == 0, result.output
    assert "A: 1, tie: 1, unparseable: 1" in result.output


@pytest.mark.parametrize(
    ("fmt", "text", "winner", "rule"),
    [
        # the verdict stated first, then a discussion that mentions the other output last
        (
            "llmbar",
            "Output (a) is better. It answers directly.\n\nOutput (b) incorrectly states the date.",
            Winner.A,
            "unanimous",
        ),
        # LLMBar's Vanilla regex reads a line starting "Output (a)" as (a); nothing prefers it
        (
            "llmbar",
            "Output (a) does not follow the instruction.\nOutput (b) is better.",
            Winner.B,
            "unanimous",
        ),
        (
            "llmbar",
            "Output (a) is better at tone. Overall, Output (b) is better.",
            Winner.B,
            "final",
        ),
        ("llmbar", "Both are fine.\n\n**Final verdict**\nOutput (b)", Winner.B, "final"),
        ("llmbar", "I choose **Output (a)**.", Winner.A, "unanimous"),
        (
            "llmbar",
            'The better response is "Output (b)" because it is accurate.',
            Winner.B,
            "unanimous",
        ),
        ("llmbar", "Output (b)", Winner.B, "unanimous"),
        (
            "llmbar",
            "Output (a) is better. Its facts hold.\nOutput (b) is better formatted.\nThat is all.",
            Winner.A,
            "opening",
        ),
        (
            "llmbar",
            "Both have merits. Output (a) is better on style.\nOutput (b) is better.",
            Winner.B,
            "closing",
        ),
        ("mtbench", "My initial view was [[A]], but my final verdict is [[B]].", Winner.B, "final"),
        (
            "mtbench",
            'Answer "[[A]]" if A is better, "[[B]]" if B is or "[[C]]".\n\nB is right. [[B]]',
            Winner.B,
            "unanimous",
        ),
        ("arena_hard", "My final verdict is: [[A>>B]]", Winner.A, "final"),
        ("arena_hard", "A slip in B. [[A>B]]\n\nStill: [[A>B]].", Winner.A, "unanimous"),
    ],
)
def test_the_stated_verdict_and_the_rule_that_chose_it(fmt, text, winner, rule) -> None:
    verdict = parse(text, fmt)
    assert (verdict.winner, verdict.rule) == (winner, rule)


@pytest.mark.parametrize(
    ("fmt", "text", "rule"),
    [
        ("llmbar", "Output (a): Yes\nOutput (b): No", "none"),  # no verdict, only mentions
        ("llmbar", "Neither Output (a) nor Output (b) is better; both fail.", "none"),
        ("llmbar", "Output (a) is better at tone. Output (b) is better at facts.", "conflict"),
        ("mtbench", "[[A]]\n\nOn reflection B answers better.\n\n[[B]]", "conflict"),
        ("arena_hard", "[[A>B]] at first glance.\n\nBut B is correct: [[B>A]]", "conflict"),
    ],
)
def test_no_verdict_or_conflicting_verdicts_are_unparseable(fmt, text, rule) -> None:
    verdict = parse(text, fmt)
    assert (verdict.winner, verdict.rule) == (Winner.UNPARSEABLE, rule)


def test_agrees_with_llmbars_recorded_parse_on_its_evaluators_outputs() -> None:
    """30 real chain-of-thought outputs of LLMBar's GPT-4, LLaMA-2 and Falcon evaluators with
    the verdict LLMBar's own parser recorded (in the text's own letters)."""
    rows = [json.loads(line) for line in (JUDGE_DIR / "llmbar_evaluator_outputs.jsonl").open()]
    assert len(rows) == 30
    read = [parse(row["text"], "llmbar").winner.value.lower() for row in rows]
    assert read == [row["recorded"] for row in rows]
    # among them, verdicts stated first and followed by discussion (the last mention is not it)
    assert sum(row["text"].startswith("Output (a) is better.") for row in rows) == 7


def test_cli_explains_the_rule(tmp_path) -> None:
    from typer.testing import CliRunner

    from services.cli.main import app

    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text(
        json.dumps({"text": "Output (a) is bad. Therefore, Output (b) is better."})
        + "\n"
        + json.dumps({"text": "Output (a): Yes\nOutput (b): No"})
        + "\n"
    )
    args = ["judge", "parse", str(outputs), "--format", "llmbar", "--explain"]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "final" in result.output and "none" in result.output
    assert "B: 1, unparseable: 1" in result.output
