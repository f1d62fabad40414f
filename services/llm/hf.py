"""The `hf` backend: transformers models on CPU or GPU, batched with left padding."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.llm.base import (
    Completion,
    Prompt,
    SamplingParams,
    TokenScores,
    TokenStep,
    truncate_at_stop,
    validate_prompt,
)
from services.llm.tokens import (
    check_context,
    context_length,
    encode_context,
    encode_continuation,
    folder_fingerprint,
    render_prompt,
)

if TYPE_CHECKING:
    from services.kv.batching import ContinuousBatcher
    from services.kv.budget import PromptPlan
    from services.kv.decoder import Sequence as DecodeSequence


def load_model(
    path: str | Path, dtype: str = "float32", device: str = "cpu", adapters: Sequence[Path] = ()
) -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder, in eval mode, with LoRA adapters merged in."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    for adapter in adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.to(device).eval()
    return model, tokenizer


class HFBackend:
    name = "hf"

    def __init__(
        self,
        path: str | Path,
        model: Any = None,
        tokenizer: Any = None,
        dtype: str = "float32",
        device: str = "cpu",
        name: str | None = None,
        score_batch: int = 16,
        adapters: Sequence[Path] = (),
        decode_batch: int = 16,
        max_waiting: int = 64,
    ) -> None:
        self.path = Path(path)
        self.model = name or self.path.name
        if model is None or tokenizer is None:
            model, tokenizer = load_model(self.path, dtype, device, adapters)
        self.hf_model, self.tokenizer = model, tokenizer
        self.device = device
        self.score_batch = score_batch
        self.decode_batch = decode_batch
        self.max_waiting = max_waiting
        self._batcher: ContinuousBatcher | None = None
        self._batcher_lock = threading.Lock()
        merged = "".join(f"+{folder_fingerprint(a)}" for a in adapters)
        self._fingerprint = f"hf:{folder_fingerprint(self.path)}{merged}:{dtype}"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.context_length = context_length(self.hf_model.config)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def render(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, prompt)

    def _left_pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device
        )
        return ids, mask

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        import torch

        params.validate()
        rows = [encode_context(self.tokenizer, validate_prompt(p)) for p in prompts]
        if not rows:
            return []
        check_context(max(map(len, rows)), params.max_tokens, self.context_length)
        ids, mask = self._left_pad(rows)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": False}
        if not params.greedy:
            kwargs.update(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k or None,
            )
            if params.seed is not None:
                torch.manual_seed(params.seed)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            out = self.hf_model.generate(
                input_ids=ids,
                attention_mask=mask,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                return_dict_in_generate=True,
                output_logits=params.logprobs,
                **kwargs,
            )
        new_tokens = out.sequences[:, ids.shape[1] :]
        step_logprobs = (
            torch.stack(out.logits, 1).float().log_softmax(-1) if params.logprobs else None
        )
        results = []
        for b, prompt_ids in enumerate(rows):
            tokens = new_tokens[b].tolist()
            finish = "length"
            if self.tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(self.tokenizer.eos_token_id) + 1]
                finish = "stop"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            text, stopped = truncate_at_stop(text, params.stop)
            if stopped:
                finish = "stop"
            logprobs = None
            if step_logprobs is not None:
                logprobs = [float(step_logprobs[b, t, tok]) for t, tok in enumerate(tokens)]
            results.append(Completion(text, tokens, finish, len(prompt_ids), logprobs))
        return results

    def encode(self, prompt: Prompt, max_tokens: int) -> list[int]:
        """The prompt's token ids (through the chat template for messages); InvalidInput when
        they and max_tokens do not fit the model's context."""
        prompt_ids = encode_context(self.tokenizer, validate_prompt(prompt))
        check_context(len(prompt_ids), max_tokens, self.context_length)
        return prompt_ids

    def stream(
        self,
        prompt: Prompt,
        params: SamplingParams,
        abort: threading.Event | None = None,
        kv: Any = None,
        kv_stats: list | None = None,
    ) -> Iterator[TokenStep]:
        """Decodes one prompt token by token: yields (token id, its log-prob under the model,
        the step's top_logprobs most likely tokens).

        Concurrent streams share one continuously batched decoder (see
        services.kv.batching). Stops after EOS, max_tokens, or when abort is set
        (the caller handles stop strings). Greedy decoding gives the same tokens as
        generate(); sampling draws from a torch.Generator seeded by params.seed. kv (a
        services.kv.budget.KVConfig) decodes over a compressed cache and appends
        its KVStats to kv_stats.
        """
        from services.kv.budget import KVConfig

        params.validate()
        prompt_ids = self.encode(prompt, params.max_tokens)
        planned = self.batcher.batch.plan(kv or KVConfig(), prompt_ids)
        seq = self.sequence(planned, params, abort)
        try:
            yield from self.batcher.run(seq)
        finally:
            if kv is not None and kv_stats is not None and seq.stats is not None:
                kv_stats.append(seq.stats)

    def sequence(
        self, prompt: PromptPlan, params: SamplingParams, abort: threading.Event | None = None
    ) -> DecodeSequence:
        """A sequence of a planned prompt for the batcher, decoding by params."""
        import torch

        generator = None
        if not params.greedy:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(
                params.seed if params.seed is not None else int(torch.seed() % 2**63)
            )

        def choose(logprobs: Any) -> int:
            return sample_token(logprobs, params, generator)

        return self.batcher.batch.sequence(
            prompt,
            params.max_tokens,
            choose,
            self.tokenizer.eos_token_id,
            abort,
            params.top_logprobs,
        )

    @property
    def batcher(self) -> ContinuousBatcher:
        """The model's continuous batcher (created on first use)."""
        with self._batcher_lock:
            if self._batcher is None:
                from services.kv.batching import BatchingConfig, ContinuousBatcher

                self._batcher = ContinuousBatcher(
                    self.hf_model,
                    BatchingConfig(max_batch=self.decode_batch, max_waiting=self.max_waiting),
                )
            return self._batcher

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        """Items sharing a prompt share one forward pass: a row holds the prompt followed by
        the longest continuation of its items, and shorter continuations that are a prefix of
        it (single option letters, say) read their log-probs from the same row. Rows run in
        length-sorted chunks of `score_batch` to bound padding."""
        import torch

        if len(prompts) != len(continuations):
            raise ValueError("one continuation per prompt")
        prefix = [encode_context(self.tokenizer, validate_prompt(p)) for p in prompts]
        suffix = [encode_continuation(self.tokenizer, c) for c in continuations]
        for p, s in zip(prefix, suffix, strict=True):
            check_context(len(p), len(s), self.context_length, "continuation tokens")
        rows: list[list[int]] = []
        row_of: dict[tuple[int, ...], int] = {}
        where: list[int] = []
        for p, s in zip(prefix, suffix, strict=True):
            key = tuple(p)
            index = row_of.get(key)
            if index is None or len(s) > 1:
                index = len(rows)
                rows.append(p + s[:-1])  # the last continuation token is only predicted
                if len(s) <= 1:
                    row_of[key] = index
            where.append(index)
        row_logprobs: list[Any] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.score_batch):
            chunk = order[start : start + self.score_batch]
            width = max(len(rows[i]) for i in chunk)
            ids = torch.tensor(
                [rows[i] + [pad] * (width - len(rows[i])) for i in chunk], device=self.device
            )
            mask = torch.tensor(
                [[1] * len(rows[i]) + [0] * (width - len(rows[i])) for i in chunk],
                device=self.device,
            )
            with torch.inference_mode():
                logits = self.hf_model(input_ids=ids, attention_mask=mask).logits.float()
            for b, i in enumerate(chunk):
                row_logprobs[i] = logits[b, : len(rows[i])].log_softmax(-1)
        results = []
        for p, s, index in zip(prefix, suffix, where, strict=True):
            logprobs = row_logprobs[index]
            values = [float(logprobs[len(p) - 1 + t, token]) for t, token in enumerate(s)]
            results.append(TokenScores(s, values, len(p)))
        return results


def sample_token(logprobs: Any, params: SamplingParams, generator: Any) -> int:
    """Greedy argmax, or a draw after temperature, top-k and top-p (nucleus) filtering.

    logprobs: [vocab] log-softmax of the model's logits.
    """
    import torch

    if params.greedy:
        return int(logprobs.argmax())
    scores = logprobs / params.temperature
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = scores.sort(descending=True)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_scores.softmax(-1) >= params.top_p  # keep the first over p
        scores[order[drop]] = float("-inf")
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))
