"""The math answer checker shared by the trainer (TATA, RISE) and the prober.

Final answers are read from, in order: the last `\\boxed{...}` (braces balanced), the GSM8K
`#### <answer>` line, a "the answer is ..." sentence, and otherwise the last number in the text.
Two answers agree when both parse as numbers with the same exact rational value ("1,000" =
"1000.0", "3/4" = "\\frac{3}{4}" = "0.75", "$18" = "18") or, failing that, when their
normalized texts are equal.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####\s*(.+)")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FRAC = re.compile(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}")
_UNITS = re.compile(r"[$€£%]|\\%|\\\$|\\!|\\,|\s")


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


def extract_answer(text: str) -> str | None:
    """The final answer of a solution (see the module docstring for the order)."""
    for found in (extract_boxed(text), gsm8k_answer(text)):
        if found:
            return found
    sentences = _ANSWER_IS.findall(text)
    if sentences:
        number = _NUMBER.search(sentences[-1])
        return number.group(0) if number else sentences[-1].strip().rstrip(".").strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def parse_number(answer: str) -> Fraction | None:
    """The exact rational value of an answer, or None when it is not a number."""
    text = _FRAC.sub(r"(\1)/(\2)", answer.strip())
    text = _UNITS.sub("", text).replace(",", "").replace("(", "").replace(")", "")
    text = text.rstrip(".")
    try:
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
    "0.5" -> "1/2"), anything else as normalized text."""
    value = parse_number(answer)
    return str(value) if value is not None else normalize_text(answer)


def answers_match(predicted: str | None, gold: str | None) -> bool:
    if predicted is None or gold is None:
        return False
    return canonical(predicted) == canonical(gold)


def is_correct(solution: str, gold: str) -> bool:
    """Whether the final answer of a solution equals gold (gold may be a full GSM8K solution)."""
    return answers_match(extract_answer(solution), extract_answer(gold) or gold)
