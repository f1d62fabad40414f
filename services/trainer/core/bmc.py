"""BMC: bridging and modeling correlations in pairwise data for DPO (Jiang et al., "Bridging
and Modeling Correlations in Pairwise Data for Direct Preference Optimization").

Bridging (Sec. 3.1): a pseudo-winning response y~_w is made by a targeted modification of the
losing response y_l, guided by the winning response y_w, so that the pair (y~_w, y_l) differs
only where quality differs. Modeling (Sec. 3.2): the tokens that differ between y~_w and y_l
(a token-level diff, stopwords excluded) get m_t = 1, and their log-probs are weighted by

    lambda_t = 1 + m_t * min(1 / pi(y_t | x, y_<t), delta)        (detached)

on both the policy and the reference log-probs of the DPO margin; pi is the policy's (default)
or the reference's token probability. delta = 0 gives plain DPO.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from services.llm.base import Backend, Message, SamplingParams

_STOPWORD_TEXT = """
a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if in
into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours
yourself yourselves
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

BRIDGE_SYSTEM = (
    "You revise answers with minimal, targeted edits. Keep every part of the draft answer "
    "that is already right, word for word, and change only what makes it worse than the "
    "reference answer."
)
BRIDGE_TEMPLATE = (
    "### Instruction\n{prompt}\n\n### Reference answer (better)\n{chosen}\n\n"
    "### Draft answer (worse)\n{rejected}\n\n"
    "Rewrite the draft answer so that it is as good as the reference answer, editing as few "
    "words of the draft as possible. Output only the revised answer."
)


@dataclass(frozen=True)
class BMCConfig:
    delta: float = 3.0  # the cap on 1/pi; 0 gives DPO
    confidence: str = "policy"  # policy | reference: whose pi(y_t) sets lambda_t
    exclude_stopwords: bool = True
    bridge_max_tokens: int = 512

    def __post_init__(self) -> None:
        if self.delta < 0:
            raise ValueError("delta must be >= 0")
        if self.confidence not in ("policy", "reference"):
            raise ValueError("confidence must be policy or reference")


def bridging_prompt(prompt: str, chosen: str, rejected: str) -> list[Message]:
    return [
        {"role": "system", "content": BRIDGE_SYSTEM},
        {
            "role": "user",
            "content": BRIDGE_TEMPLATE.format(prompt=prompt, chosen=chosen, rejected=rejected),
        },
    ]


def bridge(backend: Backend, rows: Sequence[dict[str, str]], config: BMCConfig) -> list[str]:
    """y~_w for every {prompt, chosen, rejected} row, in one greedy generate call."""
    prompts = [bridging_prompt(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    params = SamplingParams(max_tokens=config.bridge_max_tokens, temperature=0.0)
    return [c.text.strip() for c in backend.generate(prompts, params)]


def _content_token(text: str, exclude_stopwords: bool) -> bool:
    word = text.strip().strip(".,;:!?\"'()[]{}").lower()
    if not word:
        return False
    return not (exclude_stopwords and word in STOPWORDS)


def diff_masks(
    tokenizer: Any, winning: Sequence[int], losing: Sequence[int], exclude_stopwords: bool = True
) -> tuple[list[int], list[int]]:
    """m_t for each token of the winning and of the losing response: 1 where the token lies
    in a replaced, inserted or deleted span of the token-level diff and is a content token
    (not whitespace, punctuation or a stopword)."""
    mask_w, mask_l = [0] * len(winning), [0] * len(losing)
    matcher = difflib.SequenceMatcher(a=list(winning), b=list(losing), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for i in range(i1, i2):
            mask_w[i] = int(_content_token(tokenizer.decode([winning[i]]), exclude_stopwords))
        for j in range(j1, j2):
            mask_l[j] = int(_content_token(tokenizer.decode([losing[j]]), exclude_stopwords))
    return mask_w, mask_l


def token_weights(token_logps: torch.Tensor, mask: torch.Tensor, delta: float) -> torch.Tensor:
    """lambda_t = 1 + m_t * min(1 / pi_t, delta), detached; token_logps and mask [B, T]."""
    inverse = torch.exp(-token_logps.detach().float())
    return 1.0 + mask.float() * torch.clamp(inverse, max=delta)
