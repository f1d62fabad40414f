"""The Backend protocol and the plain data types every backend speaks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from services.common.errors import InvalidInput, ResourceExhausted
from services.kv import TokenStep as TokenStep  # what every decoder yields

Message = dict[str, str]  # {"role": system|user|assistant|tool, "content": ...}
Prompt = str | Sequence[Message]  # raw text, or chat messages the backend templates
ROLES = frozenset({"system", "user", "assistant", "tool"})
MAX_TOP_LOGPROBS = 20  # OpenAI's limit


@dataclass(frozen=True)
class SamplingParams:
    """Sampling of one generate call (every prompt of the batch shares it)."""

    max_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: disabled
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False  # return the log-prob of each generated token
    top_logprobs: int = 0  # also return the k most likely tokens at each step (0..20)

    def validate(self, prefix: str = "sampling") -> SamplingParams:
        if not 1 <= self.max_tokens <= 32768:
            raise InvalidInput(f"{prefix}.max_tokens", "must be in 1..32768")
        if not 0.0 <= self.temperature <= 10.0:
            raise InvalidInput(f"{prefix}.temperature", "must be in 0..10")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInput(f"{prefix}.top_p", "must be in (0, 1]")
        if self.top_k < 0:
            raise InvalidInput(f"{prefix}.top_k", "must be >= 0 (0 disables it)")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidInput(f"{prefix}.top_logprobs", f"must be in 0..{MAX_TOP_LOGPROBS}")
        if any(not s for s in self.stop) or len(self.stop) > 16:
            raise InvalidInput(f"{prefix}.stop", "at most 16 non-empty stop strings")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def reproducible(self) -> bool:
        """Greedy or seeded: the same call gives the same output, so it may be cached."""
        return self.greedy or self.seed is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str  # stop | length | abort
    prompt_tokens: int
    logprobs: list[float] | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenScores:
    """Per-token log-probs of a continuation given its prompt."""

    token_ids: list[int]
    logprobs: list[float]
    prompt_tokens: int = 0
    cached: bool = False

    @property
    def total(self) -> float:
        return math.fsum(self.logprobs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Usage:
    """Calls made to the backend, calls answered from the cache, and tokens; max_calls caps
    the backend calls (None: no cap)."""

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_stage: dict[str, dict[str, int]] = field(default_factory=dict)
    max_calls: int | None = None

    def reserve(self, calls: int) -> None:
        """Raises ResourceExhausted before a batch that would take the calls over the cap."""
        if self.max_calls is not None and self.calls + calls > self.max_calls:
            raise ResourceExhausted(
                f"call budget exhausted: {self.calls} backend calls made, {calls} more needed, "
                f"budget {self.max_calls}"
            )

    def add(
        self, stage: str, calls: int = 0, cached: int = 0, prompt: int = 0, completion: int = 0
    ) -> None:
        self.calls += calls
        self.cached_calls += cached
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        entry = self.by_stage.setdefault(
            stage, {"calls": 0, "cached_calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        )
        entry["calls"] += calls
        entry["cached_calls"] += cached
        entry["prompt_tokens"] += prompt
        entry["completion_tokens"] += completion


@runtime_checkable
class Backend(Protocol):
    """What every caller of a language model uses.

    generate: one Completion per prompt, in order. score: for each (prompt, continuation),
    log p(continuation token t | prompt, tokens < t) for every continuation token.
    """

    name: str
    model: str

    @property
    def fingerprint(self) -> str:
        """Identifies the model's weights and the backend for the response cache."""
        ...

    def render(self, prompt: Prompt) -> str:
        """The text the model sees: raw text unchanged, messages through the chat template."""
        ...

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]: ...

    def score(
        self, prompts: Sequence[Prompt], continuations: Sequence[str]
    ) -> list[TokenScores]: ...


# Far beyond any context kiln serves (8,192 tokens is about 40 KB of text), small enough that
# tokenizing a refused prompt costs little.
MAX_PROMPT_BYTES = 1 << 20


def validate_prompt(prompt: Prompt, field_name: str = "prompt") -> Prompt:
    if isinstance(prompt, str):
        _check_size(len(prompt.encode("utf-8", "surrogatepass")), field_name)
        return prompt
    if not isinstance(prompt, list | tuple):
        raise InvalidInput(field_name, "must be text or a list of chat messages")
    if not prompt:
        raise InvalidInput(field_name, "messages must not be empty")
    size = 0
    for i, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise InvalidInput(f"{field_name}[{i}]", "must be an object with role and content")
        if message.get("role") not in ROLES:
            raise InvalidInput(f"{field_name}[{i}].role", f"must be one of {sorted(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise InvalidInput(f"{field_name}[{i}].content", "must be a string")
        size += len(message["content"].encode("utf-8", "surrogatepass"))
    _check_size(size, field_name)
    return prompt


def _check_size(size: int, field_name: str) -> None:
    if size > MAX_PROMPT_BYTES:
        raise InvalidInput(
            field_name, f"{size:,} bytes of text exceed the {MAX_PROMPT_BYTES:,}-byte prompt cap"
        )


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cuts text before the earliest stop string; returns (text, whether one was found)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
