"""kiln's internal tool-dialog format, the one every export converts to and from.

A dialog is its tools and turns. Turn roles: system, user, assistant, tool. An assistant turn
carries text or a set of calls (one call, or several issued in parallel); every call has a
canonical id (call_0, call_1, ... in dialog order) and is answered by one tool turn with that
call_id, whose content is the JSON result. Dialog types (ToolACE): single (one call), parallel
(one turn with several calls), dependent (a call whose arguments use an earlier result), and
non_tool (no call).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidInput
from services.toolsynth.core.calls import ToolCall
from services.toolsynth.core.tools import Tool, tool_from_dict

DIALOG_TYPES = ("single", "parallel", "dependent", "non_tool")
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Turn:
    role: str
    content: str = ""
    calls: tuple[ToolCall, ...] = ()  # assistant turns
    call_ids: tuple[str, ...] = ()  # one per call
    call_id: str = ""  # tool turns: the call answered
    name: str = ""  # tool turns: the tool's name


@dataclass
class Dialog:
    tools: list[Tool]
    turns: list[Turn]
    dialog_type: str = "single"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tools": [t.to_dict() for t in self.tools],
            "dialog_type": self.dialog_type,
            "turns": [turn_to_dict(t) for t in self.turns],
            "meta": self.meta,
        }

    def calls(self) -> list[tuple[int, str, ToolCall]]:
        """(turn index, call id, call) for every call, in order."""
        return [
            (i, call_id, call)
            for i, t in enumerate(self.turns)
            for call_id, call in zip(t.call_ids, t.calls, strict=True)
        ]


def turn_to_dict(t: Turn) -> dict[str, Any]:
    out: dict[str, Any] = {"role": t.role, "content": t.content}
    if t.calls:
        out["calls"] = [
            {"id": i, "name": c.name, "arguments": c.arguments}
            for i, c in zip(t.call_ids, t.calls, strict=True)
        ]
    if t.role == "tool":
        out.update(call_id=t.call_id, name=t.name)
    return out


def dialog_from_dict(data: dict[str, Any], where: str = "dialog") -> Dialog:
    turns = []
    for i, raw in enumerate(data.get("turns", [])):
        if raw.get("role") not in ROLES:
            raise InvalidInput(f"{where}.turns[{i}].role", f"must be one of {ROLES}")
        calls = raw.get("calls", [])
        turns.append(
            Turn(
                raw["role"],
                raw.get("content", ""),
                tuple(ToolCall(c["name"], c.get("arguments", {})) for c in calls),
                tuple(c["id"] for c in calls),
                raw.get("call_id", ""),
                raw.get("name", ""),
            )
        )
    return Dialog(
        [tool_from_dict(t, f"{where}.tools[{i}]") for i, t in enumerate(data.get("tools", []))],
        turns,
        data.get("dialog_type", "single"),
        data.get("meta", {}),
    )


def canonical_ids(turns: list[Turn]) -> list[Turn]:
    """Renumbers call ids call_0, call_1, ... in order and points tool turns at them."""
    renamed: dict[str, str] = {}
    out = []
    for t in turns:
        if t.calls:
            ids = []
            for old in t.call_ids or [""] * len(t.calls):
                new = f"call_{len(renamed)}"
                renamed[old or new] = new
                ids.append(new)
            t = Turn(t.role, t.content, t.calls, tuple(ids))
        elif t.role == "tool":
            t = Turn("tool", t.content, call_id=renamed.get(t.call_id, t.call_id), name=t.name)
        out.append(t)
    return out


def result_text(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False, sort_keys=True)
