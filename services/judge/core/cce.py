"""Crowd-based Comparative Evaluation (CCE; Zhang et al. 2025, "Crowd Comparative Reasoning:
Unlocking Comprehensive Evaluations for LLM-as-a-Judge").

For an instruction x and candidates A, B:
1. Crowd responses: n responses c_1..c_n to x from the crowd models at the crowd
   temperatures (response i: model i mod |models|, temperature i mod |temperatures|,
   seed + i).
2. Crowd judgments: the judge compares each candidate with each crowd response,
   J(x, A, c_i) and J(x, B, c_i) (the candidate in the first slot), 2n judgments.
3. Selection: floor(k/2) judgments per candidate, by mode:
   criticizing (default): judgments the candidate lost, which expose its weaknesses;
   praising: judgments the candidate won; balanced: ceil(m/2) lost + floor(m/2) won;
   random: a seeded sample of the parsed ones. A mode keeps fewer when fewer qualify: it
   never pads with judgments of another kind.
4. Outcome removal: every line that carries a verdict is dropped from the kept judgments,
   so the final judge reads the analysis, never the crowd's conclusion.
5. Relabeling: the candidate keeps its own label (Assistant A or B) and crowd response i
   becomes Assistant C, D, ... (letter 2 + i), so the crowd reads as further assistants.
6. The final judge gets the vanilla pairwise prompt plus the processed crowd judgments as
   internal reference context (CCE-k). With k = 0 nothing is generated and the prompt is the
   vanilla prompt.
A reference (RevisEval) can be added to the final prompt: the combined strategy.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.judge.core.judging import JudgeContext, Outcome, Pair
from services.judge.core.prompts import pairwise_prompt
from services.judge.core.reviseval import References
from services.judge.core.verdicts import Winner
from services.llm.base import SamplingParams

SELECTIONS = ("criticizing", "praising", "balanced", "random")
MAX_CROWD = 24  # crowd letters C..Z
_LABEL = re.compile(r"\b(Assistant|Response|Answer|Output)(\s+|\s*\()([AB])\b")
_VERDICT_LINE = re.compile(r"(?im)^.*\b(final verdict|my verdict|verdict\s*:).*$")


@dataclass(frozen=True)
class CCEConfig:
    k: int = 8  # crowd judgments in the final context
    crowd_size: int = 0  # crowd responses n; 0: k
    crowd_models: tuple[str, ...] = ()  # empty: the judge model
    crowd_temperatures: tuple[float, ...] = (0.7,)
    crowd_max_tokens: int = 512
    selection: str = "criticizing"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.k <= 2 * MAX_CROWD:
            raise ValueError(f"k must be in 0..{2 * MAX_CROWD}")
        if not 0 <= self.crowd_size <= MAX_CROWD:
            raise ValueError(f"crowd_size must be in 0..{MAX_CROWD} (crowd letters C..Z)")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}")
        if not self.crowd_temperatures or any(not 0 <= t <= 2 for t in self.crowd_temperatures):
            raise ValueError("crowd_temperatures must be values in 0..2")
        if not 1 <= self.crowd_max_tokens <= 32768:
            raise ValueError("crowd_max_tokens must be in 1..32768")

    @property
    def n(self) -> int:
        return min(self.crowd_size or self.k, MAX_CROWD)

    @property
    def per_side(self) -> int:
        return self.k // 2


@dataclass(frozen=True)
class CrowdJudgment:
    crowd_index: int  # which crowd response
    winner: Winner  # in the crowd prompt's slots: A = the candidate, B = the crowd response
    text: str

    @property
    def candidate_lost(self) -> bool:
        return self.winner == Winner.B

    @property
    def candidate_won(self) -> bool:
        return self.winner == Winner.A


def crowd_letter(index: int) -> str:
    return chr(ord("C") + index)


def select(
    judgments: Sequence[CrowdJudgment], m: int, mode: str, rng: random.Random
) -> list[CrowdJudgment]:
    """At most m judgments of one candidate, by selection mode (crowd order kept)."""
    lost = [j for j in judgments if j.candidate_lost]
    won = [j for j in judgments if j.candidate_won]
    if mode == "criticizing":
        return lost[:m]
    if mode == "praising":
        return won[:m]
    if mode == "balanced":
        kept = {j.crowd_index for j in lost[: (m + 1) // 2] + won[: m // 2]}
        return [j for j in judgments if j.crowd_index in kept]
    parsed = [j for j in judgments if j.winner != Winner.UNPARSEABLE]
    kept = {j.crowd_index for j in rng.sample(parsed, min(m, len(parsed)))}
    return [j for j in judgments if j.crowd_index in kept]


def remove_outcome(text: str, verdict_format: str) -> str:
    """Drops every line holding a verdict in the format, and lines announcing one."""
    pattern = {
        "mtbench": r"\[\[\s*[ABC]\s*\]\]",
        "arena_hard": r"\[\[\s*[AB]\s*(?:>>|>|=|<<|<)\s*[AB]\s*\]\]",
        "llmbar": r"Output\s*\(\s*[ab]\s*\)",
        "json": r"\{[^{}]*\}",
    }[verdict_format]
    keep = [line for line in text.splitlines() if not re.search(pattern, line, re.IGNORECASE)]
    return _VERDICT_LINE.sub("", "\n".join(keep)).strip()


def relabel(text: str, candidate_label: str, crowd_index: int) -> str:
    """The crowd prompt's Assistant A (the candidate) -> candidate_label, Assistant B (the
    crowd response) -> its crowd letter; both at once."""
    names = {"A": candidate_label, "B": crowd_letter(crowd_index)}
    return _LABEL.sub(lambda m: f"{m.group(1)}{m.group(2)}{names[m.group(3)]}", text)


class CCEJudge:
    name = "cce"

    def __init__(
        self,
        ctx: JudgeContext,
        config: CCEConfig | None = None,
        references: References | None = None,
    ) -> None:
        self.ctx = ctx
        self.config = config or CCEConfig()
        self.references = references
        if self.references is not None:
            self.name = "cce+reviseval"

    def crowd_responses(self, instructions: Sequence[str]) -> dict[str, list[str]]:
        """n crowd responses per distinct instruction (one batched call per crowd member)."""
        config = self.config
        unique = list(dict.fromkeys(instructions))
        models = config.crowd_models or (self.ctx.judge_model,)
        crowd: dict[str, list[str]] = {x: [] for x in unique}
        for i in range(config.n):
            params = SamplingParams(
                max_tokens=config.crowd_max_tokens,
                temperature=config.crowd_temperatures[i % len(config.crowd_temperatures)],
                seed=config.seed + i,
            ).validate("crowd")
            texts = self.ctx.generate(
                "crowd",
                [[{"role": "user", "content": x}] for x in unique],
                params,
                models[i % len(models)],
            )
            for x, text in zip(unique, texts, strict=True):
                crowd[x].append(text.strip())
        return crowd

    def crowd_judgments(
        self, pairs: Sequence[Pair], crowd: dict[str, list[str]]
    ) -> list[tuple[list[CrowdJudgment], list[CrowdJudgment]]]:
        """For each pair, (judgments of the first candidate, of the second) over the crowd."""
        fmt = self.ctx.settings.verdict_format
        prompts = [
            pairwise_prompt(p.instruction, candidate, c, fmt)
            for p in pairs
            for candidate in (p.first, p.second)
            for c in crowd[p.instruction]
        ]
        verdicts = self.ctx.judge("crowd_judgment", prompts)
        out, start = [], 0
        for p in pairs:
            n = len(crowd[p.instruction])
            first, second = (
                [
                    CrowdJudgment(i, verdict.winner, text)
                    for i, (verdict, text) in enumerate(
                        verdicts[start + side * n : start + (side + 1) * n]
                    )
                ]
                for side in (0, 1)
            )
            out.append((first, second))
            start += 2 * n
        return out

    def context(
        self, pair: Pair, first: list[CrowdJudgment], second: list[CrowdJudgment]
    ) -> tuple[list[str], list[dict]]:
        """The processed crowd judgments for the final prompt, and what was kept."""
        rng = random.Random(f"{self.config.seed}:{pair.instruction}:{pair.first}:{pair.second}")
        fmt = self.ctx.settings.verdict_format
        texts, kept = [], []
        for label, judgments in (("A", first), ("B", second)):
            for j in select(judgments, self.config.per_side, self.config.selection, rng):
                texts.append(relabel(remove_outcome(j.text, fmt), label, j.crowd_index))
                kept.append({"candidate": label, "crowd": j.crowd_index, "winner": str(j.winner)})
        return texts, kept

    def judge(self, pairs: Sequence[Pair]) -> list[Outcome]:
        contexts: list[tuple[list[str], list[dict]]] = [([], []) for _ in pairs]
        if self.config.k > 0:
            crowd = self.crowd_responses([p.instruction for p in pairs])
            for i, (p, (first, second)) in enumerate(
                zip(pairs, self.crowd_judgments(pairs, crowd), strict=True)
            ):
                contexts[i] = self.context(p, first, second)
        references = self.references.shared(pairs) if self.references else None
        outcomes = self.ctx.final(pairs, references, [texts for texts, _ in contexts])
        for outcome, (_, kept) in zip(outcomes, contexts, strict=True):
            outcome.details["crowd_kept"] = kept
            # no crowd judgment parsed: the final judge saw the vanilla prompt; say so
            outcome.details["crowd_fallback"] = self.config.k > 0 and not kept
        return outcomes

    def planned_calls(self, pairs: int, instructions: int, orders: int) -> dict[str, int]:
        calls = {"judge": pairs * orders}
        if self.config.k > 0:
            calls["crowd"] = instructions * self.config.n
            calls["crowd_judgment"] = 2 * pairs * self.config.n  # shared by both orders
        if self.references is not None:
            calls.update(self.references.planned_calls(pairs, orders))
        return calls
