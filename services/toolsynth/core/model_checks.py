"""The model layer of ToolACE's dual-layer verification (Sec. 2.3): an LLM checks what rules
cannot. Each check is one greedy prompt answered with a JSON verdict (so it is cached like any
reproducible call), all dialogs' checks of a kind in one batch.

- hallucination (per call): are the argument values stated in, or derivable from, the
  conversation before the call? -> model:ungrounded_argument
- tool response (per tool turn, when an LLM played the tool): is the result consistent with
  the API definition? -> model:inconsistent_response
- consistency (per dialog): do the assistant's answers fulfil what the user asked, given the
  results? -> model:unfulfilled
A reply without the expected JSON is model:unparseable (counted as a failure).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from services.llm.base import Backend, SamplingParams
from services.toolsynth.core.dialogs import Dialog, Turn
from services.toolsynth.core.plans import tools_block

CHECK_PARAMS = SamplingParams(max_tokens=64, temperature=0.0)


def _transcript(turns: Sequence[Turn]) -> str:
    lines = []
    for t in turns:
        if t.calls:
            shown = "; ".join(f"{c.name}({json.dumps(c.arguments)})" for c in t.calls)
            lines.append(f"assistant calls: {shown}")
        else:
            lines.append(f"{t.role}: {t.content}")
    return "\n".join(lines)


def grounding_prompt(dialog: Dialog, turn_index: int) -> str:
    turn = dialog.turns[turn_index]
    calls = json.dumps([{"name": c.name, "arguments": c.arguments} for c in turn.calls])
    return (
        "Check a function call for hallucinated arguments.\n"
        f"Conversation before the call:\n{_transcript(dialog.turns[:turn_index])}\n\n"
        f"Calls: {calls}\n"
        "Is every argument value stated in, or derivable from, the conversation above? "
        'Answer with JSON only: {"grounded": true} or {"grounded": false}.'
    )


def response_prompt(dialog: Dialog, turn_index: int) -> str:
    turn = dialog.turns[turn_index]
    tool = next((t for t in dialog.tools if t.name == turn.name), None)
    definition = json.dumps(tool.to_dict() if tool else {"name": turn.name})
    return (
        "Check a tool's response against its definition.\n"
        f"Definition: {definition}\nResponse: {turn.content}\n"
        "Is the response consistent with the definition (fields, types, plausible values)? "
        'Answer with JSON only: {"consistent": true} or {"consistent": false}.'
    )


def fulfilment_prompt(dialog: Dialog) -> str:
    return (
        "Check whether an assistant did what the user asked.\n"
        f"Tools:\n{tools_block(dialog.tools)}\n\n"
        f"Conversation:\n{_transcript(dialog.turns)}\n\n"
        "Do the assistant's calls and answers fulfil every user request, consistent with "
        'the tool results? Answer with JSON only: {"fulfilled": true} or {"fulfilled": false}.'
    )


def verdict(text: str, key: str) -> bool | None:
    match = re.search(r"\{.*?\}", text, re.S)
    if match is None:
        return None
    try:
        value = json.loads(match.group(0)).get(key)
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, bool) else None


def model_errors(
    dialogs: Sequence[Dialog], backend: Backend, check_responses: bool
) -> list[list[str]]:
    """Error codes per dialog (empty: passed)."""
    asks: list[tuple[int, str, str, str]] = []  # dialog, prompt, key, failure code
    for i, d in enumerate(dialogs):
        for t, turn in enumerate(d.turns):
            if turn.calls:
                asks.append((i, grounding_prompt(d, t), "grounded", "model:ungrounded_argument"))
            elif turn.role == "tool" and check_responses:
                asks.append((i, response_prompt(d, t), "consistent", "model:inconsistent_response"))
        asks.append((i, fulfilment_prompt(d), "fulfilled", "model:unfulfilled"))
    replies = backend.generate([a[1] for a in asks], CHECK_PARAMS) if asks else []
    errors: list[set[str]] = [set() for _ in dialogs]
    for (i, _, key, code), reply in zip(asks, replies, strict=True):
        value = verdict(reply.text, key)
        if value is None:
            errors[i].add("model:unparseable")
        elif not value:
            errors[i].add(code)
    return [sorted(e) for e in errors]
