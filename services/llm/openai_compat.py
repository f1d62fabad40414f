"""The `openai` backend: any OpenAI-compatible endpoint (`vllm serve`, hosted APIs).

Messages go to /chat/completions, raw text to /completions. Scoring uses /completions with
echo=True, logprobs=0 and max_tokens=0... servers differ here, so it asks for max_tokens=1 and
keeps the echoed prompt tokens whose text offset lies at or after the prompt's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.common.errors import Unavailable
from services.llm.base import Completion, Prompt, SamplingParams, TokenScores, validate_prompt
from services.llm.scripted import render_plain


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str = "",
        timeout_s: float = 120.0,
        parallelism: int = 16,
    ) -> None:
        import httpx

        self.model = model
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.parallelism = parallelism

    @property
    def fingerprint(self) -> str:
        return f"openai:{self.base_url}:{self.model}"

    def render(self, prompt: Prompt) -> str:
        return render_plain(prompt)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            response = self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{self.base_url}{path}: {exc}") from exc
        if response.status_code >= 500:
            raise Unavailable(f"{self.base_url}{path}: HTTP {response.status_code}")
        response.raise_for_status()
        return response.json()

    def _generate_one(self, prompt: Prompt, params: SamplingParams) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_k:
            body["top_k"] = params.top_k  # vLLM extension
        if isinstance(prompt, str):
            body.update(prompt=prompt, logprobs=0 if params.logprobs else None)
            data = self._post("/completions", body)
            choice = data["choices"][0]
            text = choice["text"]
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        else:
            body.update(messages=list(prompt), logprobs=params.logprobs)
            data = self._post("/chat/completions", body)
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            content = (choice.get("logprobs") or {}).get("content") or []
            logprobs = [float(t["logprob"]) for t in content] if content else None
        usage = data.get("usage") or {}
        completion_tokens = int(usage.get("completion_tokens", 0))
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(
            text,
            [-1] * completion_tokens,
            finish,
            int(usage.get("prompt_tokens", 0)),
            [float(v) for v in logprobs] if params.logprobs and logprobs else None,
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        params.validate()
        prompts = [validate_prompt(p) for p in prompts]
        with ThreadPoolExecutor(max(1, min(self.parallelism, len(prompts)))) as pool:
            return list(pool.map(lambda p: self._generate_one(p, params), prompts))

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        results = []
        for prompt, continuation in zip(prompts, continuations, strict=True):
            if not isinstance(prompt, str):
                raise NotImplementedError("openai scoring takes raw-text prompts")
            data = self._post(
                "/completions",
                {
                    "model": self.model,
                    "prompt": prompt + continuation,
                    "max_tokens": 1,
                    "echo": True,
                    "logprobs": 0,
                    "temperature": 0.0,
                },
            )
            logprobs = data["choices"][0]["logprobs"]
            offsets, values = logprobs["text_offset"], logprobs["token_logprobs"]
            keep = [i for i, off in enumerate(offsets[:-1]) if off >= len(prompt)]
            results.append(
                TokenScores(
                    [-1] * len(keep), [float(values[i]) for i in keep], len(offsets) - 1 - len(keep)
                )
            )
        return results
