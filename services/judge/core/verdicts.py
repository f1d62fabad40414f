"""Verdict parsing for the judge formats users bring: the verdict the judge *states*, wherever
it states it (first or last), never a mere mention of an output in the reasoning.

A parser finds the text's verdict statements, then resolves them by the first rule that
applies (Verdict.rule says which):
1. `final`: the last statement marked as the conclusion ("Therefore", "Overall", "In
   conclusion", "Final verdict:", a "Verdict" heading on the line before, ...);
2. `unanimous`: every statement names the same winner;
3. `opening` / `closing`: the statement of the text's first sentence or of its last line,
   when only one of them exists or both agree;
otherwise the statements conflict and the text is UNPARSEABLE (`conflict`), as is text with
no statement at all (`none`). UNPARSEABLE is counted, never turned into a grade.

Formats (pairwise unless noted):
- mtbench:    [[A]] | [[B]] | [[C]] (C = tie)
- arena_hard: [[A>>B]] [[A>B]] [[A=B]] [[B>A]] [[B>>A]] (>> is a strong preference)
- llmbar:     a sentence that prefers "Output (a)" or "Output (b)" ("Output (b) is better",
              "the better output is Output (a)", "I choose Output (a)", a line that is only
              "Output (a)", "Final verdict: Output (b)"); "Output (a) does not ..." is a
              mention, not a verdict
- json:       {"winner" | "verdict" | "preference": "A" | "B" | "tie"} (the last object)
- pointwise:  [[7]] or "Rating: 7" (a score, not a winner; the last one)
In the bracket formats a sentence naming several different labels quotes the format ("[[A]]
if A is better, [[B]] ...") and states nothing.

Where the benchmarks' own parsers differ: FastChat's MT-Bench reads [[A]] whenever it appears,
before [[B]] and [[C]]; LLMBar's regexes take the first line starting "Output (a)" (Vanilla) or
any "Output (a) is better." (CoT) before looking for (b), so "Output (a) does not follow ...
Therefore, Output (b) is better." reads (a) there and (b) here. Arena-Hard, like kiln, calls
conflicting labels unparseable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
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
    rule: str = "none"  # final | unanimous | opening | closing | last | conflict | none

    @property
    def parsed(self) -> bool:
        return self.winner != Winner.UNPARSEABLE


UNPARSEABLE = Verdict(Winner.UNPARSEABLE)


@dataclass(frozen=True)
class Statement:
    """One verdict the judge states: its winner, where it sits, and whether it is marked as
    the conclusion."""

    winner: Winner
    start: int
    matched: str
    strength: int = 1
    final: bool = False

    @property
    def label(self) -> tuple[Winner, int]:
        return self.winner, self.strength


_FINAL_MARKER = re.compile(
    r"\b(?:therefore|thus|hence|overall|in conclusion|in summary|to conclude|to sum up|"
    r"consequently|final(?:ly)?|verdict|conclusion)\b",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^[\s#*_>-]*(?:final\s+)?(?:verdict|conclusion|decision|answer)\b", re.I)
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def _sentence_bounds(text: str, position: int) -> tuple[int, int]:
    start = max((m.end() for m in _SENTENCE_END.finditer(text, 0, position)), default=0)
    following = _SENTENCE_END.search(text, position)
    return start, following.start() if following else len(text)


def _is_final(text: str, start: int) -> bool:
    """A conclusion marker in the statement's sentence, or a verdict heading on the line
    before it."""
    sentence_start, sentence_end = _sentence_bounds(text, start)
    if _FINAL_MARKER.search(text, sentence_start, sentence_end):
        return True
    line_start = text.rfind("\n", 0, start) + 1
    before = text[:line_start].rstrip("\n").rsplit("\n", 1)[-1] if line_start else ""
    return bool(before.strip()) and bool(_HEADING.match(before)) and len(before) < 40


def _resolve(text: str, statements: list[Statement]) -> Verdict:
    if not statements:
        return UNPARSEABLE

    def chosen(statement: Statement, rule: str) -> Verdict:
        return Verdict(statement.winner, statement.strength, matched=statement.matched, rule=rule)

    finals = [s for s in statements if s.final]
    if finals:
        return chosen(finals[-1], "final")
    if len({s.label for s in statements}) == 1:
        return chosen(statements[-1], "unanimous")
    first_sentence_end = _sentence_bounds(text, len(text) - len(text.lstrip()))[1]
    opening = statements[0] if statements[0].start < first_sentence_end else None
    last_line_start = text.rstrip().rfind("\n") + 1
    closing = statements[-1] if statements[-1].start >= last_line_start else None
    if opening and closing and opening.label != closing.label:
        return Verdict(Winner.UNPARSEABLE, rule="conflict")
    if closing:
        return chosen(closing, "closing")
    if opening:
        return chosen(opening, "opening")
    return Verdict(Winner.UNPARSEABLE, rule="conflict")


def _without_format_quotes(text: str, statements: list[Statement]) -> list[Statement]:
    """Drops statements whose sentence names another label too (a quote of the format),
    unless a conclusion marker leads straight to it ("..., but my final verdict is [[B]]")."""
    kept = []
    for statement in statements:
        start, end = _sentence_bounds(text, statement.start)
        labels = {s.label for s in statements if start <= s.start < end}
        lead = text[max(start, statement.start - 25) : statement.start]
        if len(labels) == 1 or _FINAL_MARKER.search(lead):
            kept.append(statement)
    return kept


def _statements(
    pattern: re.Pattern[str], text: str, read: Callable[[re.Match[str]], tuple[Winner, int] | None]
) -> list[Statement]:
    found = []
    for match in pattern.finditer(text):
        if (label := read(match)) is None:
            continue
        winner, strength = label
        final = _is_final(text, match.start())
        found.append(Statement(winner, match.start(), match.group(0), strength, final))
    return found


_MTBENCH = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_ARENA = re.compile(r"\[\[\s*([AB])\s*(>>|>|=|<<|<)\s*([AB])\s*\]\]")


def parse_mtbench(text: str) -> Verdict:
    def read(match: re.Match[str]) -> tuple[Winner, int]:
        return {"A": Winner.A, "B": Winner.B, "C": Winner.TIE}[match.group(1)], 1

    return _resolve(text, _without_format_quotes(text, _statements(_MTBENCH, text, read)))


def parse_arena_hard(text: str) -> Verdict:
    def read(match: re.Match[str]) -> tuple[Winner, int] | None:
        left, op, right = match.groups()
        if op == "=":
            return Winner.TIE, 1
        if left == right:
            return None
        return Winner(left if op.startswith(">") else right), 2 if len(op) == 2 else 1

    return _resolve(text, _without_format_quotes(text, _statements(_ARENA, text, read)))


_OUTPUT = r"Output\s*\(\s*([ab])\s*\)"
_PREFERRED = (
    r"(?:better|best|preferred|preferable|superior|the winner|more (?:helpful|accurate|"
    r"appropriate|relevant|suitable|effective|precise|correct|faithful|complete))"
)
_DEGREE = r"(?:(?:clearly|slightly|much|far|significantly|definitely|overall|somewhat|the|a)\s+)*"
_LLMBAR = re.compile(
    "|".join(
        [
            rf"(?<!neither )(?<!nor )(?<!if )(?<!whether ){_OUTPUT}\s*,?\s*(?:is|was|seems|"
            rf"would be|appears to be|provides|gives|offers)\s+(?:a\s+|an\s+)?{_DEGREE}"
            rf"{_PREFERRED}",
            rf"(?:better|best|preferred|superior|winning|stronger)\s+(?:output|response|answer|"
            rf"one|choice)\s+(?:here\s+)?(?:is|would be)\s*:?\s*[*_\"'`]*\s*{_OUTPUT}",
            rf"\bI\s+(?:would\s+)?(?:choose|prefer|pick|select|go with|recommend)\s+[*_\"'`]*"
            rf"{_OUTPUT}",
            rf"(?m:^[\s*_\"'`#>-]*{_OUTPUT}[\s*_\"'`.!]*$)",
            rf"(?:verdict|winner|choice|decision)\s*(?:is)?\s*[:\-]?\s*[*_\"'`]*\s*{_OUTPUT}",
            rf"\b(?:therefore|thus|hence|so|in conclusion|overall)\s*,?\s*[*_\"'`]*{_OUTPUT}"
            rf"[*_\"'`]*\s*(?:[.!]|$)",
        ]
    ),
    re.IGNORECASE,
)


def parse_llmbar(text: str) -> Verdict:
    def read(match: re.Match[str]) -> tuple[Winner, int]:
        letter = next(g for g in match.groups() if g)
        return Winner(letter.upper()), 1

    return _resolve(text, _statements(_LLMBAR, text, read))


_JSON_OBJECT = re.compile(r"\{[^{}]*\}")
_JSON_KEYS = ("winner", "verdict", "preference", "better")
_WORDS = {"a": Winner.A, "b": Winner.B, "tie": Winner.TIE, "c": Winner.TIE, "equal": Winner.TIE}


def parse_json(text: str) -> Verdict:
    for candidate in reversed(_JSON_OBJECT.findall(text)):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        for key in _JSON_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value.strip().lower() in _WORDS:
                return Verdict(_WORDS[value.strip().lower()], matched=candidate, rule="last")
    return UNPARSEABLE


_POINT_BRACKETS = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
_POINT_RATING = re.compile(r"Rating\s*:\s*\[*\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_pointwise(text: str) -> Verdict:
    matches = [m for p in (_POINT_BRACKETS, _POINT_RATING) for m in p.finditer(text)]
    if not matches:
        return UNPARSEABLE
    last = max(matches, key=lambda m: m.start())
    return Verdict(Winner.NONE, score=float(last.group(1)), matched=last.group(0), rule="last")


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
