"""ToolFlow's dialogue plan ("Boosting LLM Tool-Calling Through Natural and Coherent Dialogue
Synthesis", Sec. 3.2, planned generation): before a dialog is written, the sampled tools are
turned into an ordered list of per-turn user requirements, each a tool item (the tools the
turn needs) or a chit-chat item; the user agent follows the plan, one item per user turn,
and the dialog ends when the plan is done.

The plan is written by the LLM (`plan_prompt` / `parse_plan`) or, without a model, by
`template_plan`, which draws the items from the tool set and the dialog type.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from services.toolsynth.core.tools import Tool, json_schema

TYPE_RULES = {
    "single": "exactly one tool item, which calls one tool once",
    "parallel": "one tool item that needs several independent calls issued at once "
    "(several tools, or one tool with different arguments)",
    "dependent": "one tool item whose second call needs a value returned by the first call",
    "non_tool": "only chit-chat items; no tool is needed",
}


@dataclass(frozen=True)
class PlanItem:
    kind: str  # tool | chitchat
    requirement: str
    tools: tuple[str, ...] = ()


@dataclass(frozen=True)
class DialogPlan:
    dialog_type: str
    items: tuple[PlanItem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dialog_type": self.dialog_type,
            "items": [
                {"kind": i.kind, "requirement": i.requirement, "tools": list(i.tools)}
                for i in self.items
            ],
        }


def tools_block(tools: list[Tool]) -> str:
    return json.dumps([t.to_dict() for t in tools], ensure_ascii=False, indent=1)


def plan_prompt(tools: list[Tool], dialog_type: str, turns: int) -> str:
    return (
        "You are planning a natural conversation between a user and an AI assistant that can "
        "call the tools below.\n\n"
        f"Tools:\n{tools_block(tools)}\n\n"
        f"Write a plan of at most {turns} user turns. The conversation must contain "
        f"{TYPE_RULES[dialog_type]}; the other turns are chit-chat that fits the topic. Each "
        'item is {"kind": "tool" or "chitchat", "tools": [names of the tools the turn needs], '
        '"requirement": "what the user wants in this turn, with concrete values"}.\n'
        "Answer with the JSON list of items only."
    )


def embedded_json(text: str, opener: str) -> Any:
    """The JSON list (opener "[") or object ("{") spanning the first opener to the last
    closer in a model's reply; None if there is none or it does not parse."""
    closer = "]" if opener == "[" else "}"
    match = re.search(rf"\{opener}.*\{closer}", text, re.S)
    if match is None:
        return None
    try:
        return json.loads(match.group(0))
    except json.JSONDecodeError:
        return None


def parse_plan(text: str, tools: list[Tool], dialog_type: str, turns: int) -> DialogPlan | str:
    """The plan, or the rejection code: plan:unparseable, plan:unknown_tool, plan:type
    (tool items where the type wants none, or none where it wants one)."""
    raw = embedded_json(text, "[")
    if not isinstance(raw, list) or not raw or len(raw) > turns:
        return "plan:unparseable"
    names = {t.name for t in tools}
    items = []
    for entry in raw:
        if not isinstance(entry, dict) or entry.get("kind") not in ("tool", "chitchat"):
            return "plan:unparseable"
        requirement, used = entry.get("requirement"), entry.get("tools", [])
        if not isinstance(requirement, str) or not requirement.strip():
            return "plan:unparseable"
        if not isinstance(used, list) or not all(isinstance(u, str) for u in used):
            return "plan:unparseable"
        if any(u not in names for u in used):
            return "plan:unknown_tool"
        kind = entry["kind"] if used or entry["kind"] == "chitchat" else "chitchat"
        items.append(PlanItem(kind, requirement.strip(), tuple(used) if kind == "tool" else ()))
    tool_items = sum(i.kind == "tool" for i in items)
    if (dialog_type == "non_tool") != (tool_items == 0) or tool_items > 1:
        return "plan:type"
    return DialogPlan(dialog_type, tuple(items))


_CHITCHAT = (
    "Hi there! I have a couple of things to sort out today.",
    "Thanks, that helps a lot.",
    "By the way, how do you usually keep track of things like this?",
    "Great, that is all I needed for now.",
    "Could you remind me what you can help me with?",
)


def result_fields(tool: Tool) -> dict[str, str]:
    """Required top-level return fields with a scalar JSON Schema type: name -> type."""
    schema = json_schema(tool.returns or {}) or {}
    properties = schema.get("properties", {})
    return {
        name: properties[name]["type"]
        for name in schema.get("required", [])
        if properties.get(name, {}).get("type") in ("string", "integer", "number")
    }


def _words(name: str) -> set[str]:
    return set(re.findall(r"[a-z]+|[A-Z][a-z]*", name.replace("_", " ").lower()))


def dependent_pair(tools: list[Tool]) -> tuple[Tool, Tool, str, str] | None:
    """(first, second, result field, parameter): a required parameter of `second` of the same
    type as a required scalar result field of `first` and sharing a word with its name (the
    same name first); None if the set has none."""
    best: tuple[tuple[int, int], tuple[Tool, Tool, str, str]] | None = None
    for first in tools:
        fields = result_fields(first)
        for second in tools:
            if second is first:
                continue
            schema = json_schema(second.parameters)
            for param in schema.get("required", []):
                kind = schema.get("properties", {}).get(param, {}).get("type")
                for field_name, field_type in fields.items():
                    shared = len(_words(field_name) & _words(param))
                    rank = (field_name == param, shared)
                    if kind == field_type and shared and (best is None or rank > best[0]):
                        best = (rank, (first, second, field_name, param))
    return best[1] if best else None


def template_plan(tools: list[Tool], dialog_type: str, rng: random.Random) -> DialogPlan | str:
    """A plan without a model: an optional chit-chat opener, the one tool item the type needs
    (parallel: two tools, or one tool twice; dependent: a pair from `dependent_pair`), and an
    optional chit-chat closer. Returns plan:infeasible when the tools cannot make the type."""
    opener = [PlanItem("chitchat", rng.choice(_CHITCHAT))] if rng.random() < 0.3 else []
    closer = [PlanItem("chitchat", rng.choice(_CHITCHAT))] if rng.random() < 0.3 else []
    if dialog_type == "non_tool":
        body = [PlanItem("chitchat", rng.choice(_CHITCHAT))]
    elif dialog_type == "single":
        tool = rng.choice(tools)
        body = [PlanItem("tool", tool.description, (tool.name,))]
    elif dialog_type == "parallel":
        chosen = rng.sample(tools, 2) if len(tools) > 1 else [tools[0], tools[0]]
        body = [PlanItem("tool", "two things at once", tuple(t.name for t in chosen))]
    else:
        pair = dependent_pair(tools)
        if pair is None:
            return "plan:infeasible"
        first, second, _, _ = pair
        body = [PlanItem("tool", "one step needs the other", (first.name, second.name))]
    return DialogPlan(dialog_type, tuple(opener + body + closer))
