"""Tool-integrated reasoning (ToRA-style, as TATA's TIR uses it): the model writes a ```python
block and announces its output with ```output; kiln stops there, runs the block in the
sandbox, writes the output block itself and lets the model continue, for up to max_rounds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from services.common.sandbox import SandboxLimits, SandboxResult, run_python
from services.llm.base import Backend, Prompt, SamplingParams

CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
OUTPUT_CUE = "```output"


@dataclass(frozen=True)
class TIRConfig:
    max_rounds: int = 4
    limits: SandboxLimits = field(default_factory=SandboxLimits)


@dataclass
class ToolRound:
    code: str
    output: str
    ok: bool


@dataclass
class TIRResult:
    text: str  # everything after the prompt: model text and kiln-written output blocks
    rounds: list[ToolRound]
    finish_reason: str
    completion_tokens: int


def continuation(prompt: Prompt, text: str) -> Prompt:
    """The prompt extended by text: appended to raw text, or as a partial assistant turn."""
    if not text:
        return prompt
    if isinstance(prompt, str):
        return prompt + text
    return [*prompt, {"role": "assistant", "content": text}]


def pending_code(segment: str) -> str | None:
    """The code of a python block that closes the segment (only whitespace after it)."""
    blocks = list(CODE_BLOCK.finditer(segment))
    if not blocks or segment[blocks[-1].end() :].strip():
        return None
    return blocks[-1].group(1)


def format_output(result: SandboxResult) -> str:
    if result.timed_out:
        return "TimeoutError: execution exceeded its time limit"
    if result.exit_code != 0:
        lines = result.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit code {result.exit_code}"
    return result.stdout.rstrip("\n")


def generate_with_tools(
    backend: Backend,
    prompt: Prompt,
    params: SamplingParams,
    config: TIRConfig,
    run: Callable[[str, SandboxLimits], SandboxResult] = run_python,
) -> TIRResult:
    """Generates, executing each closed python block, until the model ends without one or
    max_rounds blocks have run. params.max_tokens bounds each model turn."""
    sampling = replace(params, stop=(*params.stop, OUTPUT_CUE))
    text, rounds, tokens, finish = "", [], 0, "stop"
    while True:
        (completion,) = backend.generate([continuation(prompt, text)], sampling)
        text += completion.text
        tokens += len(completion.token_ids)
        finish = completion.finish_reason
        code = pending_code(completion.text)
        if code is None or len(rounds) >= config.max_rounds or finish != "stop":
            return TIRResult(text, rounds, finish, tokens)
        result = run(code, config.limits)
        output = format_output(result)
        rounds.append(ToolRound(code, output, result.ok))
        text += f"{OUTPUT_CUE}\n{output}\n```\n"
