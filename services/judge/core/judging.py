"""What every judge strategy shares: the pair in prompt order, the outcome of one order, the
settings of judge calls, and the context that hands out cached, usage-counted backends.

A strategy judges pairs in the order given (first = Assistant A); the both-order evaluation
(services.judge.core.evaluation) asks it about (A, B) and (B, A) in one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.judge.core.prompts import PAIRWISE_FORMATS, pairwise_prompt
from services.judge.core.verdicts import Verdict, Winner, parse
from services.llm.base import Backend, Message, Prompt, SamplingParams, Usage
from services.llm.cache import CachingBackend, ResponseCache


@dataclass(frozen=True)
class Pair:
    instruction: str
    first: str  # shown as Assistant A
    second: str  # shown as Assistant B


@dataclass
class Outcome:
    """One strategy's judgment of one pair in one order; winner in the prompt's slots."""

    winner: Winner
    text: str  # the final judge's raw text (reasoning and verdict)
    prompt: list[Message]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgeSettings:
    """Sampling of the judge's own calls (greedy by default, so the cache applies)."""

    verdict_format: str = "mtbench"
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.verdict_format not in PAIRWISE_FORMATS:
            raise ValueError(f"verdict_format must be one of {', '.join(PAIRWISE_FORMATS)}")

    def params(self, **overrides: Any) -> SamplingParams:
        values = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            **overrides,
        }
        return SamplingParams(**values).validate()


class JudgeContext:
    """Backends by model and stage, all sharing one response cache and one Usage.

    backend_for(model) creates the raw backend of a model (remote inference, vllm, openai,
    or scripted in tests); each is created once.
    """

    def __init__(
        self,
        backend_for: Callable[[str], Backend],
        judge_model: str,
        settings: JudgeSettings | None = None,
        cache: ResponseCache | None = None,
        usage: Usage | None = None,
    ) -> None:
        self._backend_for = backend_for
        self._raw: dict[str, Backend] = {}
        self.judge_model = judge_model
        self.settings = settings or JudgeSettings()
        self.cache = cache
        self.usage = usage if usage is not None else Usage()

    def backend(self, stage: str, model: str | None = None) -> CachingBackend:
        model = model or self.judge_model
        if model not in self._raw:
            self._raw[model] = self._backend_for(model)
        return CachingBackend(self._raw[model], self.cache, self.usage, stage)

    def generate(
        self,
        stage: str,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        model: str | None = None,
    ) -> list[str]:
        if not prompts:
            return []
        return [c.text for c in self.backend(stage, model).generate(prompts, params)]

    def judge(
        self, stage: str, prompts: Sequence[Prompt], fmt: str | None = None, **overrides: Any
    ) -> list[tuple[Verdict, str]]:
        """Judge calls with the judge's settings; each text parsed in `fmt` (default: the
        settings' pairwise format)."""
        texts = self.generate(stage, prompts, self.settings.params(**overrides))
        fmt = fmt or self.settings.verdict_format
        return [(parse(text, fmt), text) for text in texts]

    def final(
        self,
        pairs: Sequence[Pair],
        references: Sequence[str] | None = None,
        crowd_judgments: Sequence[Sequence[str]] | None = None,
        criteria: Sequence[str] = (),
    ) -> list[Outcome]:
        """The final pairwise judgment of each pair (stage `judge`), with the optional blocks
        of services.judge.core.prompts.pairwise_prompt; a reference is kept in the details."""
        fmt = self.settings.verdict_format
        prompts = [
            pairwise_prompt(
                p.instruction,
                p.first,
                p.second,
                fmt,
                reference=references[i] if references is not None else None,
                crowd_judgments=crowd_judgments[i] if crowd_judgments is not None else (),
                criteria=criteria,
            )
            for i, p in enumerate(pairs)
        ]
        outcomes = []
        for i, (prompt, (verdict, text)) in enumerate(
            zip(prompts, self.judge("judge", prompts), strict=True)
        ):
            details = {"reference": references[i]} if references is not None else {}
            outcomes.append(Outcome(verdict.winner, text, prompt, details))
        return outcomes


class Strategy(Protocol):
    name: str

    def judge(self, pairs: Sequence[Pair]) -> list[Outcome]:
        """One outcome per pair, in order."""
        ...

    def planned_calls(self, pairs: int, instructions: int, orders: int) -> dict[str, int]:
        """Backend calls per stage to judge that many distinct pairs over that many distinct
        instructions in 1 or 2 orders, with identical calls made once and no cache hits."""
        ...
