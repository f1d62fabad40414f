"""Reasoning utilities shared by the trainer (TATA, RISE) and the prober: the steps of a chain
of thought (split_steps) and the math answer it reaches (the checker below).

Final answers are read from, in order: the last `\\boxed{...}` (braces balanced), the GSM8K
`#### <answer>` line, the last "the answer is ..." sentence, and otherwise the last number of a
solution that reads as finished (one cut off inside a calculation, or in a sentence with no
number yet, has no answer: grade_answer says NO_ANSWER rather than guessing).

An answer is reduced to its value before it is compared: LaTeX (`$...$`, `\\text{}`,
`\\frac{a}{b}`) and Unicode minus signs are read, an equation gives its right-hand side
(`3 + 4 = 7` -> 7, `x = 4` -> 4), a number followed by words is that number (`12 apples` -> 12,
`: 120` -> 120), and "not 5; it is 6" gives 6. Two answers agree when both parse as numbers
with the same exact rational value ("1,000" = "1000.0" = "1 000", "3/4" = "\\frac{3}{4}" =
"0.75", "2 1/2" = "5/2", "$18" = "18"; "1,2,3" is not a number) or, failing that, when their
normalized texts are equal.
"""

from __future__ import annotations

import re
from enum import StrEnum
from fractions import Fraction

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\\$])")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####\s*(.+)")
_ANSWER_IS = re.compile(r"answer is[:\s]*([^\n]+)", re.IGNORECASE)
_NUMBER_TEXT = (
    r"-?(?:\d+\s+\d+/\d+"  # a mixed number: 2 1/2
    r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?"  # thousands with commas: 1,000.5
    r"|\d{1,3}(?:[ \u00a0\u2009]\d{3})+(?:\.\d+)?"  # thousands with spaces: 118 000
    r"|\d+(?:\.\d+)?(?:/\d+)?"  # 12, 1.5, 3/4
    r"|\.\d+)"
)
_NUMBER = re.compile(_NUMBER_TEXT)
_LEADING_NUMBER = re.compile(rf"\s*({_NUMBER_TEXT})(?![\d/.,])\s*([^\W\d][\w\s'-]*)?[.!]?\s*$")
_FRAC = re.compile(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}")
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_UNITS = re.compile(r"[$€£%]|\\%|\\\$|\\!|\\,")
_SENTENCE_BREAK = re.compile(r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)[.!?]\s+|\n")
_MINUS = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-"})
_NEGATED = re.compile(r"^\s*not\b[^;,]*[;,]?\s*(?:but\s+)?(?:it\s+is\s+|it's\s+)?", re.I)


class Outcome(StrEnum):
    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"  # the solution states no final answer (e.g. it was cut off)


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every `\\boxed{...}` with balanced braces, in order."""
    spans = []
    for match in _BOXED.finditer(text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            spans.append((match.start(), i, text[match.end() : i - 1]))
    return spans


def extract_boxed(text: str) -> str | None:
    spans = boxed_spans(text)
    return spans[-1][2].strip() if spans else None


def strip_boxed(text: str) -> str:
    """Replaces every `\\boxed{x}` by x (RISE's filter: an edited step must not announce a
    final answer)."""
    out, last = [], 0
    for start, end, content in boxed_spans(text):
        out.append(text[last:start] + content)
        last = end
    return "".join(out) + text[last:]


def gsm8k_answer(solution: str) -> str | None:
    """The answer after the last `####` of a GSM8K reference solution."""
    matches = _GSM8K.findall(solution)
    return matches[-1].strip() if matches else None


def _plain(answer: str) -> str:
    """LaTeX and Unicode read: minus signs, \\text{}, \\frac{a}{b} -> (a)/(b), no $...$."""
    text = answer.translate(_MINUS).replace("\\$", "$").replace("\\%", "%")
    text = _TEXT_MACRO.sub(r"\1", text)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    return text.replace("$", " ").strip()


def answer_value(answer: str) -> str:
    """An answer reduced to its value (see the module docstring): the number's own text when
    there is one ("1,200", "-3", "(1)/(2)"), else the answer's plain text."""
    text = _plain(answer)
    if negated := _NEGATED.match(text):
        text = text[negated.end() :]
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    text = text.strip().lstrip(":").strip().rstrip(".").strip()
    if parse_number(text) is not None:
        return text
    if match := _LEADING_NUMBER.fullmatch(text.replace("(", "").replace(")", "")):
        return match.group(1)
    return text


def extract_answer(text: str) -> str | None:
    """The final answer of a solution (see the module docstring for the order), or None."""
    if (boxed := extract_boxed(text)) is not None:
        return answer_value(boxed)
    if found := gsm8k_answer(text):
        return found
    sentences = _ANSWER_IS.findall(text)
    if sentences:
        sentence = re.split(r"(?<=[^\d\s])[.!?](?:\s|$)", sentences[-1])[0]
        return answer_value(sentence) or None
    plain = _plain(text)
    numbers = _NUMBER.findall(plain)
    return numbers[-1] if numbers and _finished(plain) else None


def _finished(text: str) -> bool:
    """Whether a solution without an answer line reads as finished rather than cut off: it does
    not end inside a calculation (after `=`, an operator or an open `<<`), and it ends with a
    sentence mark or its last sentence holds a number."""
    tail = text.rstrip()
    if not tail or tail[-1] in "=+-*/×(<:" or tail.rfind("<<") > tail.rfind(">>"):
        return False
    last_sentence = _SENTENCE_BREAK.split(tail)[-1]
    return tail[-1] in ".!?\"'" or _NUMBER.search(last_sentence) is not None


def parse_number(answer: str) -> Fraction | None:
    """The exact rational value of an answer, or None when it is not a number."""
    text = _UNITS.sub("", _plain(answer)).strip().rstrip(".").strip()
    text = text.replace("(", "").replace(")", "")
    if not re.fullmatch(_NUMBER_TEXT, text):
        return None
    text = re.sub(r"[,\u00a0\u2009]|(?<=\d) (?=\d{3}\b)", "", text)
    try:
        if mixed := re.fullmatch(r"(-?)(\d+)\s+(\d+)/(\d+)", text):
            sign = -1 if mixed.group(1) else 1
            return sign * (int(mixed.group(2)) + Fraction(int(mixed.group(3)), int(mixed.group(4))))
        if "/" in text:
            numerator, denominator = text.split("/")
            return Fraction(numerator) / Fraction(denominator)
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def normalize_text(answer: str) -> str:
    return " ".join(answer.strip().strip(".").strip().lower().split())


def canonical(answer: str) -> str:
    """One spelling per value: numbers as reduced integers or fractions ("42.0" -> "42",
    "0.5" -> "1/2", "3 * 2 = 6 pages" -> "6"), anything else as normalized text."""
    reduced = answer_value(answer)
    value = parse_number(reduced)
    return str(value) if value is not None else normalize_text(reduced)


def answers_match(predicted: str | None, gold: str | None) -> bool:
    if predicted is None or gold is None:
        return False
    return canonical(predicted) == canonical(gold)


def grade_answer(solution: str, gold: str) -> Outcome:
    """CORRECT or WRONG against gold (a value, or a full GSM8K solution), or NO_ANSWER when the
    solution states none."""
    predicted = extract_answer(solution)
    if predicted is None:
        return Outcome.NO_ANSWER
    correct = answers_match(predicted, extract_answer(gold) or gold)
    return Outcome.CORRECT if correct else Outcome.WRONG


def is_correct(solution: str, gold: str) -> bool:
    """Whether the final answer of a solution equals gold (gold may be a full GSM8K solution)."""
    return grade_answer(solution, gold) == Outcome.CORRECT


def split_steps(reasoning: str, mode: str = "lines") -> list[str]:
    """Non-empty steps, in order. lines: one step per line; sentences: one per sentence.

    Joining the steps with newlines (lines) or spaces (sentences) gives back the reasoning
    up to whitespace, so probe k sees exactly the first k steps.
    """
    if mode == "lines":
        parts = reasoning.splitlines()
    elif mode == "sentences":
        parts = [p for line in reasoning.splitlines() for p in _SENTENCE_END.split(line)]
    else:
        raise ValueError(f"unknown step mode {mode!r}")
    return [p.strip() for p in parts if p.strip()]
