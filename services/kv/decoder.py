"""Decoding with the kiln cache: prefill (exact attention, then prune + quantize per layer),
then token-by-token decoding over the compressed cache with positions that never shift, one
sequence alone or many together, each with its own compression.

`kiln_attention` is registered as a transformers attention implementation; it acts only
when the layer's cache is a KilnCache (handed over by KilnCache.update in the same thread) and
is plain SDPA otherwise, so a model set to it serves every other caller unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from services.kv import TokenStep
from services.kv.budget import CacheGeometry, KVConfig, KVPlan, PromptPlan, plan_prompt
from services.kv.cache import ACTIVE, BatchedKilnCache, KilnCache
from services.kv.quantized_attention import attend

ATTENTION_NAME = "kiln"
_NO_MASK = torch.zeros(1, 1, 1, 1, dtype=torch.bool)  # a prepared 4-D mask: HF skips masking


def kiln_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query [1, Hq, Tq, D]; key/value [1, Hkv, Tk, D] (grouped heads, never repeated)."""
    cache: KilnCache | BatchedKilnCache | None = getattr(ACTIVE, "cache", None)
    ACTIVE.cache = None
    if cache is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    layer = module.layer_idx
    if isinstance(cache, BatchedKilnCache):  # one decode token per sequence, its own store
        rows = [
            _decode(seq_cache, layer, query[row], scaling)
            for row, seq_cache in enumerate(cache.caches)
        ]
        return torch.stack(rows).transpose(1, 2).contiguous(), None
    if cache.prefilling:
        keys, values = cache.prefill_chunk(layer, query[0], key[0], value[0], scaling)
        out = _prefill_attention(query, keys.unsqueeze(0), values.unsqueeze(0), scaling)
        return out.transpose(1, 2).contiguous(), None
    out = _decode(cache, layer, query[0], scaling)
    return out.unsqueeze(0).transpose(1, 2).contiguous(), None


def _decode(cache: KilnCache, layer: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
    """query [Hq, 1, D] over the layer's compressed store -> [Hq, 1, D]; then the cache's
    decode-time eviction, with this step's attention when H2O needs it."""
    out, probs = attend(query, cache.layers[layer], scaling, cache.needs_attention_probs)
    cache.after_decode_attention(layer, probs)
    return out


def _prefill_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Causal attention of a chunk's queries [1, Hq, c, D], the last c of the S positions of
    key/value [1, Hkv, S, D] -> [1, Hq, c, D]."""
    chunk, seen = query.shape[2], key.shape[2]
    if chunk == seen:
        return F.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=True
        )
    rows = torch.arange(seen - chunk, seen, device=query.device).unsqueeze(-1)
    mask = torch.arange(seen, device=query.device).unsqueeze(0) <= rows  # [c, S]
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True
    )


_registered = False


def use_kiln_attention(model: Any) -> None:
    """Registers kiln_attention (once) and selects it for model."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION_NAME, kiln_attention)
        _registered = True
    if model.config._attn_implementation != ATTENTION_NAME:
        model.set_attn_implementation(ATTENTION_NAME)


def geometry_of(model: Any) -> CacheGeometry:
    return CacheGeometry.from_config(model.config)


@dataclass
class KVStats:
    plan: KVPlan
    bytes_used: int  # measured: bytes physically held by the cache at the end
    bytes_full: int  # the same tokens in an uncompressed 16-bit cache
    tokens_per_layer: list[int]
    kept_per_head: list[list[int]]  # [layer][KV head] after prefill compression


Event = tuple["Sequence", int, float, tuple]  # (sequence, *TokenStep)


class Sequence:
    """One request decoding over its own KilnCache (its own method, budget and bits).

    choose: [vocab] log-probs -> token id (greedy or sampling). The prompt's context is
    prefilled and compressed; its question tokens (query-agnostic compression, see
    budget.PromptPlan) are then read through the compressed cache one per step.
    top_logprobs k > 0: each event also carries the step's k most likely tokens.
    """

    def __init__(
        self,
        prompt: PromptPlan,
        max_tokens: int,
        choose: Callable[[torch.Tensor], int],
        geometry: CacheGeometry,
        eos_token_id: int | None,
        abort: threading.Event | None = None,
        top_logprobs: int = 0,
    ) -> None:
        self.prompt_ids = prompt.context_ids
        self.question = list(prompt.question_ids)
        self.kv = prompt.config
        self.plan = prompt.plan
        self.geometry = geometry
        self.max_tokens = max_tokens
        self.choose = choose
        self.eos_token_id = eos_token_id
        self.abort = abort or threading.Event()
        self.top_logprobs = top_logprobs
        self.cache: KilnCache | None = None
        self.prefilled = 0  # prompt tokens through the model so far
        self.tokens: list[int] = []
        self.next_input = -1
        self.position = len(self.prompt_ids)
        self.finished = False

    @property
    def stats(self) -> KVStats | None:
        """The cache's plan and measured bytes once it has been prefilled."""
        if self.cache is None:
            return None
        full = self.geometry.token_bytes() * self.cache.seen_tokens
        cache = self.cache
        return KVStats(
            self.plan, cache.nbytes(), full, cache.tokens_per_layer(), cache.kept_per_head
        )

    def advance(self, logits: torch.Tensor) -> Event | None:
        """Reads the model's next-token logits [vocab]: the next question token is forced,
        otherwise a token is chosen, recorded and becomes the next input."""
        if self.question:
            self.next_input = self.question.pop(0)
            return None
        logprobs = logits.float().log_softmax(-1)
        token = self.choose(logprobs)
        self.tokens.append(token)
        self.next_input = token
        self.finished = (
            token == self.eos_token_id or len(self.tokens) >= self.max_tokens or self.abort.is_set()
        )
        top: tuple[tuple[int, float], ...] = ()
        if self.top_logprobs:
            values, ids = logprobs.topk(self.top_logprobs)
            top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
        return self, token, float(logprobs[token]), top


class DecodeBatch:
    """Iteration-level batching (Orca): sequences join after their own prefill (compression
    needs each prompt's attention) and leave when done, while every decoding step feeds one
    token per live sequence, [B, 1], through a BatchedKilnCache.

    A prompt is prefilled in chunks of `prefill_chunk` tokens, so its attention never needs a
    T x T matrix and an abort (or a client gone) stops a long prefill within one chunk.
    """

    def __init__(self, model: Any, prefill_chunk: int = 512) -> None:
        use_kiln_attention(model)
        self.model = model
        self.prefill_chunk = prefill_chunk
        self.geometry = geometry_of(model)
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.no_mask = _NO_MASK.to(self.device)
        self.live: list[Sequence] = []

    def sequence(
        self,
        prompt: PromptPlan,
        max_tokens: int,
        choose: Callable[[torch.Tensor], int],
        eos_token_id: int | None,
        abort: threading.Event | None = None,
        top_logprobs: int = 0,
    ) -> Sequence:
        """A sequence of this model for a planned prompt (not yet admitted)."""
        return Sequence(
            prompt, max_tokens, choose, self.geometry, eos_token_id, abort, top_logprobs
        )

    def plan(self, config: KVConfig, prompt_ids: list[int]) -> PromptPlan:
        """plan_prompt for this model's geometry."""
        return plan_prompt(config, prompt_ids, self.geometry)

    def admit(self, seq: Sequence) -> Event | None:
        """Prefills seq alone, all chunks at once (prefill_next until it is done or aborted);
        it joins the batch unless its first token already ends it."""
        while True:
            event = self.prefill_next(seq)
            if seq.finished or seq.prefilled == len(seq.prompt_ids):
                return event

    def prefill_next(self, seq: Sequence) -> Event | None:
        """Runs the next chunk of seq's prompt (exact attention; the first chunk creates its
        cache, the last prunes and quantizes each layer). After the last chunk seq picks its
        first token and joins the batch unless that token ends it; its event is returned. An
        abort seen before a chunk ends seq and drops its partial cache."""
        if seq.abort.is_set():
            seq.cache, seq.finished = None, True
            return None
        if seq.cache is None:
            seq.cache = KilnCache(seq.plan, seq.kv, self.geometry, self.dtype)
        prompt, start = seq.prompt_ids, seq.prefilled
        end = min(len(prompt), start + self.prefill_chunk)
        with torch.inference_mode():
            ids = torch.tensor([prompt[start:end]], device=self.device)
            positions = torch.arange(start, end, device=self.device).unsqueeze(0)
            logits = self._forward(ids, positions, seq.cache)
        seq.prefilled = end
        if end < len(prompt):
            return None
        event = seq.advance(logits[0, -1])
        if not seq.finished:
            self.live.append(seq)
        return event

    def step(self) -> list[Event]:
        """One decoding step of every live sequence; finished ones leave the batch."""
        for seq in self.live:
            seq.finished = seq.finished or seq.abort.is_set()
        live = self.live = [s for s in self.live if not s.finished]
        if not live:
            return []
        ids = torch.tensor([[s.next_input] for s in live], device=self.device)
        positions = torch.tensor([[s.position] for s in live], device=self.device)
        cache = live[0].cache if len(live) == 1 else BatchedKilnCache([s.cache for s in live])
        with torch.inference_mode():
            logits = self._forward(ids, positions, cache)
        events = []
        for row, seq in enumerate(live):
            seq.position += 1
            if (event := seq.advance(logits[row, -1])) is not None:
                events.append(event)
        self.live = [s for s in live if not s.finished]
        return events

    def _forward(
        self, ids: torch.Tensor, positions: torch.Tensor, cache: KilnCache | BatchedKilnCache
    ) -> torch.Tensor:
        return self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=self.no_mask,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits


def compressed_stream(
    model: Any,
    prompt_ids: list[int],
    max_tokens: int,
    choose: Callable[[torch.Tensor], int],
    config: KVConfig,
    eos_token_id: int | None,
    abort: threading.Event | None = None,
    stats: list[KVStats] | None = None,
) -> Iterator[TokenStep]:
    """Yields the TokenSteps of one sequence decoded alone; appends its KVStats at the end."""
    batch = DecodeBatch(model)
    seq = batch.sequence(batch.plan(config, prompt_ids), max_tokens, choose, eos_token_id, abort)
    try:
        if (event := batch.admit(seq)) is not None:
            yield event[1:]
        while batch.live:
            for event in batch.step():
                yield event[1:]
    finally:
        if stats is not None and seq.stats is not None:
            stats.append(seq.stats)
