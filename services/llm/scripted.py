"""The `scripted` backend: deterministic answers from rules or recordings, for tests.

Tokens are UTF-8 bytes (token id = byte value), and the score of a continuation is a uniform
byte model (log 1/256 per byte) unless a scorer is given: simple, exact and documented.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from services.common.errors import InvalidInput
from services.llm.base import (
    Completion,
    Prompt,
    SamplingParams,
    TokenScores,
    truncate_at_stop,
    validate_prompt,
)

Responder = Callable[[str], str]
Scorer = Callable[[str, str], list[float]]
UNIFORM_BYTE_LOGPROB = -math.log(256)


def render_plain(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if prompt[-1]["role"] == "assistant":  # continue a partial assistant turn
        head = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in prompt[:-1])
        return f"{head}<|assistant|>{prompt[-1]['content']}"
    return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in prompt) + "<|assistant|>"


class ScriptedBackend:
    """rules: (regex, template) pairs tried in order against the rendered prompt (the first
    search hit answers, with \\1-style groups expanded); then `responder`; then recordings
    (rendered prompt -> response). No answer is an InvalidInput naming the prompt."""

    name = "scripted"

    def __init__(
        self,
        rules: Sequence[tuple[str, str]] = (),
        responder: Responder | None = None,
        recordings: dict[str, str] | None = None,
        scorer: Scorer | None = None,
        model: str = "scripted",
    ) -> None:
        self.rules = [(re.compile(pattern, re.S), template) for pattern, template in rules]
        self.responder = responder
        self.recordings = dict(recordings or {})
        self.scorer = scorer
        self.model = model
        spec = json.dumps([[r.pattern, t] for r, t in self.rules] + sorted(self.recordings.items()))
        self._fingerprint = "scripted:" + hashlib.sha256(spec.encode()).hexdigest()[:16]

    @classmethod
    def from_recordings(cls, path: Path, model: str = "scripted") -> ScriptedBackend:
        """Recordings file: JSON Lines of {"prompt": rendered, "response": text}."""
        lines = Path(path).read_text().splitlines()
        return cls(
            recordings={(r := json.loads(x))["prompt"]: r["response"] for x in lines if x},
            model=model,
        )

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def render(self, prompt: Prompt) -> str:
        return render_plain(prompt)

    def _respond(self, text: str) -> str:
        for pattern, template in self.rules:
            match = pattern.search(text)
            if match:
                return match.expand(template)
        if self.responder is not None:
            return self.responder(text)
        if text in self.recordings:
            return self.recordings[text]
        raise InvalidInput("prompt", f"no scripted rule or recording answers {text[:80]!r}")

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        params.validate()
        results = []
        for prompt in prompts:
            rendered = self.render(validate_prompt(prompt))
            text, stopped = truncate_at_stop(self._respond(rendered), params.stop)
            tokens = list(text.encode())
            finish = "stop"
            if len(tokens) > params.max_tokens:
                tokens = tokens[: params.max_tokens]
                text = bytes(tokens).decode(errors="ignore")
                finish = "length" if not stopped else "stop"
            logprobs = [UNIFORM_BYTE_LOGPROB] * len(tokens) if params.logprobs else None
            results.append(Completion(text, tokens, finish, len(rendered.encode()), logprobs))
        return results

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        results = []
        for prompt, continuation in zip(prompts, continuations, strict=True):
            rendered = self.render(validate_prompt(prompt))
            tokens = list(continuation.encode())
            if self.scorer is not None:
                values = [float(v) for v in self.scorer(rendered, continuation)]
                if len(values) != len(tokens):
                    raise ValueError("scorer must return one log-prob per continuation byte")
            else:
                values = [UNIFORM_BYTE_LOGPROB] * len(tokens)
            results.append(TokenScores(tokens, values, len(rendered.encode())))
        return results
