"""Splitting a chain of thought into the steps Chain-of-Probe probes between."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\\$])")


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
