"""Dedup, decontamination and quality statistics of a synthesized dataset.

- exact dedup: sha256 of the dialog's canonical JSON (tools excluded: the same conversation
  over another tool list is still the same conversation);
- near dedup: a dialog whose text embedding has cosine > threshold with a kept one is dropped
  (greedy, in order);
- leak check: dialogs using a tool whose name equals, or whose "name: description" embedding
  is within threshold of, a benchmark tool (e.g. BFCL's) are flagged;
- Distinct-n (unique n-grams / all n-grams of the user and assistant texts), the Shannon
  entropy (bits) of tool usage, and the dialog-type mix achieved vs requested.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from services.toolsynth.core.dialogs import Dialog, turn_to_dict
from services.toolsynth.core.tools import Tool

Embed = Callable[[Sequence[str]], torch.Tensor]


def dialog_hash(dialog: Dialog) -> str:
    turns = [turn_to_dict(t) for t in dialog.turns]
    blob = json.dumps(turns, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def dialog_text(dialog: Dialog) -> str:
    return "\n".join(t.content for t in dialog.turns if t.role in ("user", "assistant"))


def dedup(
    dialogs: Sequence[Dialog], embed: Embed | None = None, threshold: float = 0.95
) -> tuple[list[Dialog], dict[str, int]]:
    """Kept dialogs (in order) and how many each stage removed."""
    seen: set[str] = set()
    exact = []
    for d in dialogs:
        key = dialog_hash(d)
        if key not in seen:
            seen.add(key)
            exact.append(d)
    removed = {"exact": len(dialogs) - len(exact), "near": 0}
    if embed is None or not exact or threshold >= 1.0:
        return exact, removed
    vectors = embed([dialog_text(d) for d in exact])
    kept_rows: list[int] = []
    for i in range(len(exact)):
        if kept_rows and float((vectors[kept_rows] @ vectors[i]).max()) > threshold:
            continue
        kept_rows.append(i)
    removed["near"] = len(exact) - len(kept_rows)
    return [exact[i] for i in kept_rows], removed


def leaked_tools(
    tools: Sequence[Tool], benchmark: Sequence[Tool], embed: Embed, threshold: float = 0.9
) -> set[str]:
    """Names of tools that match a benchmark tool by name or by description embedding."""
    names = {b.name for b in benchmark}
    leaked = {t.name for t in tools if t.name in names}
    if tools and benchmark:
        text = [f"{t.name}: {t.description}" for t in tools]
        bench = [f"{b.name}: {b.description}" for b in benchmark]
        sims = embed(text) @ embed(bench).T  # [tools, benchmark]
        leaked |= {
            tools[i].name for i in (sims.max(dim=1).values > threshold).nonzero().flatten().tolist()
        }
    return leaked


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        words = text.split()
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def entropy(counts: Counter) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values() if c) if total else 0.0


def quality_stats(dialogs: Sequence[Dialog], requested_mix: dict[str, float]) -> dict[str, Any]:
    texts = [dialog_text(d) for d in dialogs]
    usage = Counter(c.name for d in dialogs for _, _, c in d.calls())
    types = Counter(d.dialog_type for d in dialogs)
    n = len(dialogs)
    total_share = sum(requested_mix.values()) or 1.0
    return {
        "dialogs": n,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "tool_entropy_bits": entropy(usage),
        "tools_used": len(usage),
        "mix": {
            t: {
                "requested": requested_mix.get(t, 0.0) / total_share,
                "achieved": types[t] / n if n else 0.0,
            }
            for t in sorted(set(requested_mix) | set(types))
        },
    }
