"""Pairwise evaluation sets in the formats users bring, read into one item type.

- kiln:        {"instruction", "response_a", "response_b", "label": "A" | "B" | "tie"}
- llmbar:      {"input", "output_1", "output_2", "label": 1 | 2} (LLMBar, and the processed
               MT-Bench human pairs of the LLMBar repository, which use the same fields)
- evalbias:    {"instruction", "response1", "response2", "label": 1 | 2}, as a list or as
               EvalBiasBench's {bias name: [items]} object
- rewardbench: {"prompt", "chosen", "rejected"} (the chosen response is shown as A)
- mtbench_human: lmsys MT-Bench human judgments {"conversation_a", "conversation_b", "winner":
               "model_a" | "model_b" | "tie" | "tie (bothbad)"}; the instruction is the
               conversation up to the last user turn, the responses the two last turns
The format is recognized from the first item's fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidInput
from services.judge.core.verdicts import Winner

FORMATS = {
    "kiln": ("instruction", "response_a", "response_b"),
    "llmbar": ("input", "output_1", "output_2"),
    "evalbias": ("instruction", "response1", "response2"),
    "rewardbench": ("prompt", "chosen", "rejected"),
    "mtbench_human": ("conversation_a", "conversation_b", "winner"),
}
_WINNERS = {"model_a": "A", "model_b": "B", "tie": "tie", "tie (bothbad)": "tie"}
_LABELS = {"1": Winner.A, "2": Winner.B, "a": Winner.A, "b": Winner.B, "tie": Winner.TIE}


@dataclass(frozen=True)
class PairItem:
    instruction: str
    response_a: str
    response_b: str
    label: Winner | None  # None: unlabeled
    meta: dict[str, Any] = field(default_factory=dict)


def detect_format(row: dict[str, Any]) -> str:
    for name, keys in FORMATS.items():
        if all(k in row for k in keys):
            return name
    raise InvalidInput(
        "dataset",
        f"unknown pair format with fields {sorted(row)}; known: "
        + "; ".join(f"{n} ({', '.join(k)})" for n, k in FORMATS.items()),
    )


def _label(value: Any, where: str) -> Winner | None:
    if value is None or value == "":
        return None
    label = _LABELS.get(str(value).strip().lower())
    if label is None:
        raise InvalidInput(where, f"label {value!r} is not 1/2/A/B/tie")
    return label


def parse_file(data: bytes, field: str = "dataset") -> Any:
    """A JSON document (list, or EvalBiasBench's object) or JSON Lines, parsed."""
    try:
        text = data.decode()
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(field, f"neither JSON nor JSON Lines: {exc}") from exc


def load_pairs(data: Any) -> list[PairItem]:
    """Items from parsed JSON: a list of rows, EvalBiasBench's object of lists, or one row."""
    if isinstance(data, dict):
        grouped = data and all(isinstance(g, list) for g in data.values())
        data = [r for group in data.values() for r in group] if grouped else [data]
    if not isinstance(data, list):
        raise InvalidInput("dataset", "must be a list of items")
    rows: list[Any] = data
    if not rows:
        raise InvalidInput("dataset", "no items")
    if not all(isinstance(r, dict) for r in rows):
        raise InvalidInput("dataset", "every item must be a JSON object")
    fmt = detect_format(rows[0])
    if fmt == "mtbench_human":
        rows = [_from_conversations(row, f"dataset[{i}]") for i, row in enumerate(rows)]
        fmt = "kiln"
    keys = FORMATS[fmt]
    items = []
    for i, row in enumerate(rows):
        where = f"dataset[{i}]"
        if not all(isinstance(row.get(k), str) for k in keys):
            raise InvalidInput(where, f"needs string fields {', '.join(keys)}")
        label = Winner.A if fmt == "rewardbench" else _label(row.get("label"), where)
        meta = {k: v for k, v in row.items() if k not in (*keys, "label")}
        items.append(PairItem(row[keys[0]], row[keys[1]], row[keys[2]], label, meta))
    return items


def _from_conversations(row: dict[str, Any], where: str) -> dict[str, Any]:
    a, b = row.get("conversation_a"), row.get("conversation_b")
    ok = (
        isinstance(a, list)
        and isinstance(b, list)
        and len(a) == len(b) >= 2
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in a + b)
    )
    if not ok or row.get("winner") not in _WINNERS:
        raise InvalidInput(
            where,
            "needs conversation_a/conversation_b (equal-length lists of {role, content} "
            f"ending with the assistant turns) and winner in {sorted(_WINNERS)}",
        )
    history = a[:-1]
    instruction = (
        history[0]["content"]
        if len(history) == 1
        else "\n\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in history)
    )
    meta = {k: v for k, v in row.items() if k not in FORMATS["mtbench_human"]}
    return {
        "instruction": instruction,
        "response_a": a[-1]["content"],
        "response_b": b[-1]["content"],
        "label": _WINNERS[row["winner"]],
        **meta,
    }
