import pytest

from services.judge.core.verdicts import Winner, parse


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
def test_pairwise_formats_take_the_last_verdict(
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
