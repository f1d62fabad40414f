"""Exports of the internal dialog format, each with its import, so that
from_X(to_X(dialog)) == dialog for every dialog whose call ids are canonical:

- openai:   {"tools": [...], "messages": [...]} (a tool's return schema, when known, rides
            along as the function's "returns") with assistant tool_calls (arguments as a
            JSON string) and tool messages carrying tool_call_id and name
- hermes:   {"tools", "messages"}: the tools in the system prompt inside <tools></tools>,
            each call as <tool_call>{"name", "arguments"}</tool_call> in the assistant text,
            each result as <tool_response>{"name", "content"}</tool_response> in a tool turn
- sharegpt: {"tools": JSON string, "conversations": [{"from", "value"}]} with from = system |
            human | gpt | function_call (a JSON list of {name, arguments}) | observation
- toolace:  {"system": the tools as JSON, "conversations"} with from = user | assistant |
            tool, the assistant's calls in bracket-Python form, results as a JSON list of
            {"name", "results"}
Formats with no place for call ids (hermes, sharegpt, toolace) restore the canonical ids.
An assistant turn with both text and calls has no sharegpt or toolace form (InvalidInput).
"""

from __future__ import annotations

import json
import re
from typing import Any

from services.common.errors import InvalidInput
from services.toolsynth.core.calls import ToolCall, parse_python_calls, render_python_calls
from services.toolsynth.core.dialogs import Dialog, Turn, canonical_ids, result_text
from services.toolsynth.core.tools import tool_from_dict

FORMATS = ("openai", "hermes", "sharegpt", "toolace")
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_TOOL_RESPONSE = re.compile(r"^<tool_response>\s*(.*?)\s*</tool_response>$", re.S)
_TOOLS = re.compile(r"<tools>\s*(.*?)\s*</tools>", re.S)
HERMES_SYSTEM = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user "
    "query. For each function call return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags.\n<tools>\n{tools}\n</tools>"
)


def _meta(dialog: Dialog) -> dict[str, Any]:
    return {"dialog_type": dialog.dialog_type, "meta": dialog.meta}


def _restore(dialog: Dialog, data: dict[str, Any]) -> Dialog:
    dialog.dialog_type = data.get("dialog_type", dialog.dialog_type)
    dialog.meta = data.get("meta", dialog.meta)
    return dialog


# -- openai ---------------------------------------------------------------------------------
def to_openai(dialog: Dialog) -> dict[str, Any]:
    messages = []
    for t in dialog.turns:
        if t.role == "tool":
            messages.append(
                {"role": "tool", "tool_call_id": t.call_id, "name": t.name, "content": t.content}
            )
        elif t.calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": t.content or None,
                    "tool_calls": [
                        {
                            "id": i,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for i, c in zip(t.call_ids, t.calls, strict=True)
                    ],
                }
            )
        else:
            messages.append({"role": t.role, "content": t.content})
    return {"tools": [t.to_openai() for t in dialog.tools], "messages": messages, **_meta(dialog)}


def from_openai(data: dict[str, Any]) -> Dialog:
    turns = []
    for m in data["messages"]:
        if m["role"] == "tool":
            turns.append(
                Turn("tool", m["content"], call_id=m["tool_call_id"], name=m.get("name", ""))
            )
        elif m.get("tool_calls"):
            calls = tuple(
                ToolCall(c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
                for c in m["tool_calls"]
            )
            ids = tuple(c["id"] for c in m["tool_calls"])
            turns.append(Turn("assistant", m.get("content") or "", calls, ids))
        else:
            turns.append(Turn(m["role"], m.get("content") or ""))
    return _restore(Dialog([tool_from_dict(t) for t in data["tools"]], turns), data)


# -- hermes ---------------------------------------------------------------------------------
def to_hermes(dialog: Dialog) -> dict[str, Any]:
    tools = json.dumps([t.to_openai()["function"] for t in dialog.tools], ensure_ascii=False)
    messages = [{"role": "system", "content": HERMES_SYSTEM.format(tools=tools)}]
    for t in dialog.turns:
        if t.role == "tool":
            body = json.dumps({"name": t.name, "content": t.content}, ensure_ascii=False)
            messages.append(
                {"role": "tool", "content": f"<tool_response>\n{body}\n</tool_response>"}
            )
        elif t.calls:
            blocks = [
                "<tool_call>\n"
                + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)
                + "\n</tool_call>"
                for c in t.calls
            ]
            text = (t.content + "\n" if t.content else "") + "\n".join(blocks)
            messages.append({"role": "assistant", "content": text})
        else:
            messages.append({"role": t.role, "content": t.content})
    return {"messages": messages, **_meta(dialog)}


def from_hermes(data: dict[str, Any]) -> Dialog:
    messages = data["messages"]
    found = _TOOLS.findall(messages[0]["content"]) if messages else []
    if not found:
        raise InvalidInput("hermes", "the first message must be the system prompt with <tools>")
    tools = [tool_from_dict(t) for t in json.loads(found[-1])]
    turns = []
    for m in messages[1:]:
        if m["role"] == "tool":
            match = _TOOL_RESPONSE.match(m["content"].strip())
            if not match:
                raise InvalidInput("hermes", "a tool message must be one <tool_response>")
            body = json.loads(match.group(1))
            turns.append(Turn("tool", body["content"], name=body["name"]))
        elif m["role"] == "assistant" and _TOOL_CALL.search(m["content"]):
            calls = tuple(
                ToolCall((c := json.loads(b))["name"], c.get("arguments", {}))
                for b in _TOOL_CALL.findall(m["content"])
            )
            text = m["content"][: m["content"].index("<tool_call>")].rstrip("\n")
            turns.append(Turn("assistant", text, calls))
        else:
            turns.append(Turn(m["role"], m["content"]))
    return _restore(Dialog(tools, _link(turns)), data)


def _link(turns: list[Turn]) -> list[Turn]:
    """Canonical ids; tool turns answer the pending calls in order."""
    turns = canonical_ids(turns)
    pending: list[str] = []
    out = []
    for t in turns:
        if t.calls:
            pending = list(t.call_ids)
        elif t.role == "tool":
            t = Turn("tool", t.content, call_id=pending.pop(0) if pending else "", name=t.name)
        out.append(t)
    return out


def _plain_assistant(t: Turn, fmt: str) -> None:
    if t.calls and t.content:
        raise InvalidInput(fmt, "an assistant turn with both text and calls has no form here")


# -- sharegpt -------------------------------------------------------------------------------
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def to_sharegpt(dialog: Dialog) -> dict[str, Any]:
    conversations = []
    for t in dialog.turns:
        _plain_assistant(t, "sharegpt")
        if t.role == "tool":
            value = json.dumps({"name": t.name, "content": t.content}, ensure_ascii=False)
            conversations.append({"from": "observation", "value": value})
        elif t.calls:
            calls = [{"name": c.name, "arguments": c.arguments} for c in t.calls]
            conversations.append(
                {"from": "function_call", "value": json.dumps(calls, ensure_ascii=False)}
            )
        else:
            conversations.append({"from": _SHAREGPT_FROM[t.role], "value": t.content})
    tools = json.dumps([t.to_openai()["function"] for t in dialog.tools], ensure_ascii=False)
    return {"tools": tools, "conversations": conversations, **_meta(dialog)}


def from_sharegpt(data: dict[str, Any]) -> Dialog:
    roles = {v: k for k, v in _SHAREGPT_FROM.items()}
    turns = []
    for c in data["conversations"]:
        if c["from"] == "observation":
            body = json.loads(c["value"])
            turns.append(Turn("tool", body["content"], name=body["name"]))
        elif c["from"] == "function_call":
            calls = tuple(
                ToolCall(x["name"], x.get("arguments", {})) for x in json.loads(c["value"])
            )
            turns.append(Turn("assistant", "", calls))
        else:
            turns.append(Turn(roles[c["from"]], c["value"]))
    tools = [tool_from_dict(t) for t in json.loads(data["tools"])]
    return _restore(Dialog(tools, _link(turns)), data)


# -- toolace --------------------------------------------------------------------------------
def to_toolace(dialog: Dialog) -> dict[str, Any]:
    conversations = []
    pending_results: list[dict[str, Any]] = []
    for t in dialog.turns:
        _plain_assistant(t, "toolace")
        if t.role == "tool":
            pending_results.append({"name": t.name, "results": json.loads(t.content)})
            continue
        if pending_results:
            conversations.append({"from": "tool", "value": json.dumps(pending_results)})
            pending_results = []
        if t.calls:
            conversations.append({"from": "assistant", "value": render_python_calls(list(t.calls))})
        else:
            conversations.append({"from": t.role, "value": t.content})
    if pending_results:
        conversations.append({"from": "tool", "value": json.dumps(pending_results)})
    system = json.dumps([t.to_dict() for t in dialog.tools], ensure_ascii=False)
    return {"system": system, "conversations": conversations, **_meta(dialog)}


def from_toolace(data: dict[str, Any]) -> Dialog:
    turns: list[Turn] = []
    for c in data["conversations"]:
        if c["from"] == "tool":
            for r in json.loads(c["value"]):
                turns.append(Turn("tool", result_text(r["results"]), name=r["name"]))
        elif c["from"] == "assistant" and (calls := _call_list(c["value"])):
            turns.append(Turn("assistant", "", tuple(calls)))
        else:
            turns.append(Turn(c["from"], c["value"]))
    tools = [tool_from_dict(t) for t in json.loads(data["system"])]
    return _restore(Dialog(tools, _link(turns)), data)


def _call_list(text: str) -> list[ToolCall]:
    """The calls of a bracket-Python call list; empty for any other assistant text."""
    if not text.strip().startswith("["):
        return []
    try:
        return parse_python_calls(text)
    except InvalidInput:
        return []


EXPORTERS = {
    "openai": to_openai,
    "hermes": to_hermes,
    "sharegpt": to_sharegpt,
    "toolace": to_toolace,
}
IMPORTERS = {
    "openai": from_openai,
    "hermes": from_hermes,
    "sharegpt": from_sharegpt,
    "toolace": from_toolace,
}
