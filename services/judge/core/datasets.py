"""Pairwise evaluation sets in the formats users bring, read into one item type.

- kiln:        {"instruction", "response_a", "response_b", "label": "A" | "B" | "tie"}
- llmbar:      {"input", "output_1", "output_2", "label": 1 | 2} (LLMBar, and the processed
               MT-Bench human pairs of the LLMBar repository, which use the same fields)
- evalbias:    {"instruction", "response1", "response2", "label": 1 | 2}, as a list or as
               EvalBiasBench's {bias name: [items]} object
- rewardbench: {"prompt", "chosen", "rejected"} (the chosen response is shown as A)
The format is recognized from the first item's fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidInput
from services.judge.core.verdicts import Winner

FORMATS = {
    "kiln": ("instruction", "response_a", "response_b"),
    "llmbar": ("input", "output_1", "output_2"),
    "evalbias": ("instruction", "response1", "response2"),
    "rewardbench": ("prompt", "chosen", "rejected"),
}
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


def load_pairs(data: Any) -> list[PairItem]:
    """Items from parsed JSON: a list of rows, or EvalBiasBench's object of lists."""
    rows: Iterable[dict[str, Any]] = (
        [r for group in data.values() for r in group] if isinstance(data, dict) else data
    )
    rows = list(rows)
    if not rows:
        raise InvalidInput("dataset", "no items")
    fmt = detect_format(rows[0])
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
