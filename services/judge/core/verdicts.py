"""Verdict parsing for the judge formats users bring, with reasoning before the verdict.

Every parser takes the LAST match in the judge's text (the verdict follows the reasoning, and
a judge that quotes the format in its reasoning still ends with its own verdict). Text with no
match is UNPARSEABLE: counted, never turned into a grade.

Formats (pairwise unless noted):
- mtbench:    [[A]] | [[B]] | [[C]] (C = tie)
- arena_hard: [[A>>B]] [[A>B]] [[A=B]] [[B>A]] [[B>>A]] (>> is a strong preference)
- llmbar:     "Output (a)" | "Output (b)"
- json:       {"winner" | "verdict" | "preference": "A" | "B" | "tie"} (the last object)
- pointwise:  [[7]] or "Rating: 7" (a score, not a winner)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum


class Winner(StrEnum):
    A = "A"
    B = "B"
    TIE = "tie"
    NONE = "none"  # a pointwise verdict: a score, no winner
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class Verdict:
    winner: Winner
    strength: int = 1  # 2 for arena_hard's >>
    score: float | None = None  # pointwise
    matched: str = ""  # the text the verdict was read from

    @property
    def parsed(self) -> bool:
        return self.winner != Winner.UNPARSEABLE


UNPARSEABLE = Verdict(Winner.UNPARSEABLE)

_MTBENCH = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_ARENA = re.compile(r"\[\[\s*([AB])\s*(>>|>|=|<<|<)\s*([AB])\s*\]\]")
_LLMBAR = re.compile(r"Output\s*\(\s*([ab])\s*\)", re.IGNORECASE)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")
_POINT_BRACKETS = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
_POINT_RATING = re.compile(r"Rating\s*:\s*\[*\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_JSON_KEYS = ("winner", "verdict", "preference", "better")
_WORDS = {"a": Winner.A, "b": Winner.B, "tie": Winner.TIE, "c": Winner.TIE, "equal": Winner.TIE}


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def parse_mtbench(text: str) -> Verdict:
    match = _last(_MTBENCH, text)
    if not match:
        return UNPARSEABLE
    winner = {"A": Winner.A, "B": Winner.B, "C": Winner.TIE}[match.group(1)]
    return Verdict(winner, matched=match.group(0))


def parse_arena_hard(text: str) -> Verdict:
    match = _last(_ARENA, text)
    if not match:
        return UNPARSEABLE
    left, op, right = match.groups()
    if op == "=":
        return Verdict(Winner.TIE, matched=match.group(0))
    if left == right:
        return UNPARSEABLE
    better = left if op.startswith(">") else right
    return Verdict(Winner(better), 2 if len(op) == 2 else 1, matched=match.group(0))


def parse_llmbar(text: str) -> Verdict:
    match = _last(_LLMBAR, text)
    if not match:
        return UNPARSEABLE
    return Verdict(Winner(match.group(1).upper()), matched=match.group(0))


def parse_json(text: str) -> Verdict:
    for candidate in reversed(_JSON_OBJECT.findall(text)):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        for key in _JSON_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value.strip().lower() in _WORDS:
                return Verdict(_WORDS[value.strip().lower()], matched=candidate)
    return UNPARSEABLE


def parse_pointwise(text: str) -> Verdict:
    matches = [m for p in (_POINT_BRACKETS, _POINT_RATING) if (m := _last(p, text))]
    if not matches:
        return UNPARSEABLE
    last = max(matches, key=lambda m: m.start())
    return Verdict(Winner.NONE, score=float(last.group(1)), matched=last.group(0))


PARSERS = {
    "mtbench": parse_mtbench,
    "arena_hard": parse_arena_hard,
    "llmbar": parse_llmbar,
    "json": parse_json,
    "pointwise": parse_pointwise,
}


def parse(text: str, fmt: str) -> Verdict:
    try:
        parser = PARSERS[fmt]
    except KeyError:
        raise ValueError(f"unknown verdict format {fmt!r}; known: {', '.join(PARSERS)}") from None
    return parser(text)
