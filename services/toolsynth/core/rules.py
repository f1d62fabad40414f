"""The rule layer of dual-layer verification (ToolACE Table 4, with APIGen's format checks):
API definitions, calls against their tool's schema, dialog structure and sample consistency.
Every check yields error codes; a dialog passes when it has none.

Codes: api:* (services.toolsynth.core.tools.check_tool); call:unknown_tool,
call:missing_required, call:unexpected_param (hallucinated), call:type, call:enum,
call:format, call:schema; dialog:first_turn_not_user, dialog:role_order, dialog:empty_turn,
dialog:truncated_turn, dialog:unanswered_call, dialog:orphan_tool_turn,
dialog:no_final_response; consistency:type (the dialog is not of its declared type).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from services.toolsynth.core.dialogs import Dialog
from services.toolsynth.core.tools import Tool, check_tool, json_schema

_KEYWORD_CODES = {
    "required": "call:missing_required",
    "additionalProperties": "call:unexpected_param",
    "type": "call:type",
    "enum": "call:enum",
    "format": "call:format",
}
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def call_errors(tool: Tool | None, arguments: dict[str, Any]) -> list[str]:
    if tool is None:
        return ["call:unknown_tool"]
    schema = {"additionalProperties": False, **json_schema(tool.parameters)}
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    codes = {
        _KEYWORD_CODES.get(e.validator, "call:schema") for e in validator.iter_errors(arguments)
    }
    return sorted(codes)


def truncated(text: str) -> bool:
    """Unbalanced brackets or an unclosed code fence: the text was cut off."""
    if text.count("```") % 2:
        return True
    stack = []
    for ch in text:
        if ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in _CLOSERS.values() and (not stack or stack.pop() != ch):
            return True
    return bool(stack)


def structure_errors(dialog: Dialog) -> list[str]:
    errors: list[str] = []
    turns = [t for t in dialog.turns if t.role != "system"]
    if not turns or turns[0].role != "user":
        errors.append("dialog:first_turn_not_user")
    pending: set[str] = set()
    previous = "system"
    for t in turns:
        if t.role == "tool":
            if t.call_id not in pending:
                errors.append("dialog:orphan_tool_turn")
            pending.discard(t.call_id)
            if previous not in ("assistant", "tool"):
                errors.append("dialog:role_order")
        else:
            if pending:
                errors.append("dialog:unanswered_call")
                pending.clear()
            if t.role == previous and t.role == "user":
                errors.append("dialog:role_order")
            if not t.calls and not t.content.strip():
                errors.append("dialog:empty_turn")
            elif t.role == "assistant" and not t.calls and truncated(t.content):
                errors.append("dialog:truncated_turn")
        if t.calls:
            pending |= set(t.call_ids)
        previous = t.role
    if pending:
        errors.append("dialog:unanswered_call")
    if turns and (turns[-1].role != "assistant" or turns[-1].calls):
        errors.append("dialog:no_final_response")
    return sorted(set(errors))


def _values(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _values(v)
    elif not isinstance(value, bool) and value is not None:
        yield str(value)


def observed_type(dialog: Dialog) -> str:
    """What the dialog is: dependent if a call uses a value first seen in an earlier tool
    result, else parallel if a turn issues several calls, else single, or non_tool."""
    calls = dialog.calls()
    if not calls:
        return "non_tool"
    seen_results: set[str] = set()
    user_text = ""
    for t in dialog.turns:
        if t.role == "user":
            user_text += " " + t.content
        if t.calls:
            for c in t.calls:
                if any(v in seen_results and v not in user_text for v in _values(c.arguments)):
                    return "dependent"
        if t.role == "tool":
            try:
                seen_results |= set(_values(json.loads(t.content)))
            except json.JSONDecodeError:
                continue
    if any(len(t.calls) > 1 for t in dialog.turns):
        return "parallel"
    return "single"


def dialog_errors(dialog: Dialog, check_apis: bool = True) -> list[str]:
    """Every rule-layer code of a dialog; check_apis=False skips the API definition checks
    (for tools already checked once, as a synthesis job does for its pool)."""
    tools = {t.name: t for t in dialog.tools}
    errors = [e for t in dialog.tools for e in check_tool(t)] if check_apis else []
    for _, _, call in dialog.calls():
        errors += call_errors(tools.get(call.name), call.arguments)
    errors += structure_errors(dialog)
    if observed_type(dialog) != dialog.dialog_type:
        errors.append("consistency:type")
    return sorted(set(errors))


def stage_report(dialogs: Iterable[Dialog]) -> dict[str, Any]:
    """Pass/fail counts and failures per error code over dialogs."""
    counts: Counter[str] = Counter()
    passed = failed = 0
    for dialog in dialogs:
        errors = dialog_errors(dialog)
        counts.update(errors)
        passed, failed = (passed + 1, failed) if not errors else (passed, failed + 1)
    return {"passed": passed, "failed": failed, "errors": dict(sorted(counts.items()))}
