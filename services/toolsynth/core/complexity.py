"""ToolACE's complexity evaluation (Sec. 2.2.3): data too easy or too hard for the target
model teaches it little, so each dialog gets a complexity score and only dialogs with
low <= score <= high are kept.

- `model`: the target model's loss on the dialog, the mean negative log-likelihood per token
  of every assistant turn given the conversation before it (log-probs from the Backend's
  `score`, e.g. the inference service's Score RPC).
- `proxy` (no model): ToolACE reports that this loss grows with the number of candidate APIs,
  the number of APIs used, and the dissimilarity between the user's query and the API
  descriptions; the proxy is the weighted sum
  w_c * candidates + w_u * distinct tools called + w_d * (1 - max cosine(user turn, called tool's
  "name: description")), with the last term 0 for a dialog without calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.llm.base import Backend
from services.toolsynth.core.agents import assistant_messages
from services.toolsynth.core.dialogs import Dialog
from services.toolsynth.core.quality import Embed

MEASURES = ("model", "proxy", "none")


@dataclass(frozen=True)
class ComplexityConfig:
    measure: str = "proxy"
    low: float = 0.0
    high: float = 0.0  # 0: no upper bound
    proxy_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # candidates, tools used, dissimilarity

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"complexity measure must be one of {', '.join(MEASURES)}")
        if self.low < 0 or self.high < 0 or (self.high and self.high < self.low):
            raise ValueError("complexity bounds must satisfy 0 <= low <= high (high 0: none)")
        if len(self.proxy_weights) != 3:
            raise ValueError("proxy_weights needs 3 numbers")

    def keeps(self, score: float) -> bool:
        return score >= self.low and (not self.high or score <= self.high)


def model_complexity(dialogs: Sequence[Dialog], backend: Backend) -> list[float]:
    """Mean NLL per token (nats) of the assistant turns, one batched score call."""
    prompts, targets, owner = [], [], []
    for i, d in enumerate(dialogs):
        messages = assistant_messages(d.tools, d.turns)  # the system prompt, then one per turn
        for t, turn in enumerate(d.turns):
            if turn.role == "assistant":
                prompts.append(messages[: t + 1])
                targets.append(messages[t + 1]["content"])
                owner.append(i)
    scores = backend.score(prompts, targets) if prompts else []
    total, tokens = [0.0] * len(dialogs), [0] * len(dialogs)
    for i, s in zip(owner, scores, strict=True):
        total[i] -= math.fsum(s.logprobs)
        tokens[i] += len(s.logprobs)
    return [total[i] / tokens[i] if tokens[i] else 0.0 for i in range(len(dialogs))]


def proxy_complexity(
    dialogs: Sequence[Dialog], embed: Embed, weights: Sequence[float] = (1.0, 1.0, 1.0)
) -> list[float]:
    """The proxy per dialog; every distinct text is embedded once, in one call."""
    asks = []  # (user turns, called tools' texts) per dialog
    for d in dialogs:
        by_name = {t.name: t for t in d.tools}
        called = sorted({c.name for _, _, c in d.calls()})
        texts = [f"{n}: {by_name[n].description}" for n in called if n in by_name]
        queries = [t.content for t in d.turns if t.role == "user"] if texts else []
        asks.append((called, queries, texts))
    unique = list(dict.fromkeys(x for _, queries, texts in asks for x in queries + texts))
    index = {text: i for i, text in enumerate(unique)}
    vectors = embed(unique) if unique else None
    w_c, w_u, w_d = weights
    out = []
    for d, (called, queries, texts) in zip(dialogs, asks, strict=True):
        dissimilarity = 0.0
        if queries and texts:
            q = vectors[[index[x] for x in queries]]
            t = vectors[[index[x] for x in texts]]
            dissimilarity = 1.0 - float((q @ t.T).max())  # [user turns, tools called]
        out.append(w_c * len(d.tools) + w_u * len(called) + w_d * dissimilarity)
    return out


def complexity(
    dialogs: Sequence[Dialog], config: ComplexityConfig, backend: Backend | None, embed: Embed
) -> list[float]:
    if config.measure == "model":
        if backend is None:
            raise ValueError("model complexity needs a backend")
        return model_complexity(dialogs, backend)
    if config.measure == "proxy":
        return proxy_complexity(dialogs, embed, config.proxy_weights)
    return [0.0] * len(dialogs)
