"""Dedup, leak checks and quality statistics with hand-computed values."""

import math
from collections import Counter

import pytest
import torch

from services.toolsynth.core.calls import ToolCall
from services.toolsynth.core.dialogs import Dialog, Turn
from services.toolsynth.core.quality import (
    dedup,
    distinct_n,
    entropy,
    leaked_tools,
    quality_stats,
)
from services.toolsynth.core.tools import Tool


def chat(text: str, dialog_type: str = "non_tool", calls: tuple[ToolCall, ...] = ()) -> Dialog:
    turns = [Turn("user", text)]
    if calls:
        turns.append(
            Turn("assistant", calls=calls, call_ids=tuple(f"call_{i}" for i in range(len(calls))))
        )
    turns.append(Turn("assistant", "ok"))
    return Dialog([], turns, dialog_type)


def first_letter_embed(texts):
    out = torch.zeros(len(texts), 26)
    for i, text in enumerate(texts):
        out[i, ord(text.strip().lower()[0]) - ord("a")] = 1.0
    return out


def test_exact_then_near_dedup() -> None:
    dialogs = [chat("apples"), chat("apples"), chat("avocados"), chat("bananas")]
    kept, removed = dedup(dialogs)
    assert [d.turns[0].content for d in kept] == ["apples", "avocados", "bananas"]
    assert removed == {"exact": 1, "near": 0}
    kept, removed = dedup(dialogs, first_letter_embed, threshold=0.95)
    assert [d.turns[0].content for d in kept] == ["apples", "bananas"]
    assert removed == {"exact": 1, "near": 1}


def test_leak_check_by_name_and_embedding() -> None:
    bench = [Tool("math.factorial", "Factorial of a number.")]
    ours = [
        Tool("math.factorial", "Our own factorial."),
        Tool("mfact", "x"),  # same first letter as the benchmark text: embedding match
        Tool("weather", "Weather."),
    ]
    assert leaked_tools(ours, bench, first_letter_embed) == {"math.factorial", "mfact"}


def test_distinct_n_entropy_and_mix() -> None:
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert entropy(Counter({"f": 2, "g": 2})) == pytest.approx(1.0)
    assert entropy(Counter({"f": 4})) == 0.0
    dialogs = [
        chat("x", "single", (ToolCall("f"),)),
        chat("y", "parallel", (ToolCall("f"), ToolCall("g"))),
        chat("z"),
        chat("w"),
    ]
    stats = quality_stats(dialogs, {"single": 1, "parallel": 1, "non_tool": 2})
    assert stats["tools_used"] == 2
    assert stats["tool_entropy_bits"] == pytest.approx(
        -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    )
    assert stats["mix"]["non_tool"] == {"requested": 0.5, "achieved": 0.5}
    assert stats["mix"]["single"] == {"requested": 0.25, "achieved": 0.25}
