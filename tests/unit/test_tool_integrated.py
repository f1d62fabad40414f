"""Tool-integrated generation: stop at a python block, run it in the sandbox, continue."""

from __future__ import annotations

from services.inference.core.tool_integrated import TIRConfig, ToolRound, generate_with_tools
from services.llm import SamplingParams
from services.llm.scripted import ScriptedBackend


def solver(text: str) -> str:
    if "```output" not in text:
        return "Let me compute.\n```python\nprint(6 * 7)\n```\n```output\n(the model guesses)"
    return "The answer is \\boxed{42}."


def test_runs_the_block_and_continues() -> None:
    result = generate_with_tools(
        ScriptedBackend(responder=solver),
        "What is 6 * 7?",
        SamplingParams(max_tokens=200),
        TIRConfig(),
    )
    assert result.text == (
        "Let me compute.\n```python\nprint(6 * 7)\n```\n"
        "```output\n42\n```\nThe answer is \\boxed{42}."
    )
    assert result.rounds == [ToolRound("print(6 * 7)\n", "42", True)]
    assert result.finish_reason == "stop"


def test_chat_prompt_continues_the_assistant_turn() -> None:
    seen: list[str] = []

    def record(text: str) -> str:
        seen.append(text)
        return solver(text)

    generate_with_tools(
        ScriptedBackend(responder=record),
        [{"role": "user", "content": "What is 6 * 7?"}],
        SamplingParams(max_tokens=200),
        TIRConfig(),
    )
    assert seen[1].startswith("<|user|>What is 6 * 7?<|end|><|assistant|>Let me compute.")
    assert seen[1].endswith("```output\n42\n```\n")


def test_errors_become_output_and_rounds_are_bounded() -> None:
    always_code = ScriptedBackend(responder=lambda text: "```python\n1 / 0\n```\n```output")
    result = generate_with_tools(
        always_code, "loop", SamplingParams(max_tokens=100), TIRConfig(max_rounds=2)
    )
    assert len(result.rounds) == 2
    assert [r.output for r in result.rounds] == ["ZeroDivisionError: division by zero"] * 2
    assert not any(r.ok for r in result.rounds)
    assert result.text.count("```output\nZeroDivisionError") == 2
    assert result.text.endswith("```python\n1 / 0\n```\n")  # the third block is not run
