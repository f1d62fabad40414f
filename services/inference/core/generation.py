"""Decoding with the kiln cache: prefill (exact attention, then prune + quantize per layer),
then token-by-token decoding over the compressed cache with positions that never shift.

`kiln_attention` is registered as a transformers attention implementation; it acts only
when the layer's cache is a KilnCache (handed over by KilnCache.update in the same thread) and
is plain SDPA otherwise, so a model set to it serves every other caller unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from services.common.errors import InvalidInput
from services.inference.core.budget import CacheGeometry, KVConfig, KVPlan, plan_kv
from services.inference.core.kv_cache import ACTIVE, BatchedKilnCache, KilnCache

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
    if isinstance(cache, BatchedKilnCache):  # one decode token per sequence, padded caches
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=cache.mask, scale=scaling, enable_gqa=True
        )
        return out.transpose(1, 2).contiguous(), None
    layer = module.layer_idx
    if cache.prefilling:
        out = F.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=True
        )
        cache.store_prefill(layer, query[0], key[0], value[0], scaling)
        return out.transpose(1, 2).contiguous(), None
    probs = None
    if cache.config.compress_decode and cache.config.method == "h2o":
        group = query.shape[1] // key.shape[1]
        keys = key.repeat_interleave(group, dim=1)
        probs = (query @ keys.transpose(-1, -2) * scaling).float().softmax(-1)
        out = probs.to(value.dtype) @ value.repeat_interleave(group, dim=1)
        probs = probs[0]
    else:
        out = F.scaled_dot_product_attention(query, key, value, scale=scaling, enable_gqa=True)
    cache.after_decode_attention(layer, probs)
    return out.transpose(1, 2).contiguous(), None


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
    return CacheGeometry.from_config(model.config, next(model.parameters()).element_size())


@dataclass
class KVStats:
    plan: KVPlan
    bytes_used: int  # measured: bytes physically held by the cache at the end
    bytes_full: int  # the same tokens in an uncompressed cache of the model's dtype
    tokens_per_layer: list[int]


def compressed_stream(
    model: Any,
    prompt_ids: list[int],
    max_tokens: int,
    choose: Callable[[torch.Tensor], int],
    config: KVConfig,
    eos_token_id: int | None,
    abort: threading.Event | None = None,
    stats: list[KVStats] | None = None,
) -> Iterator[tuple[int, float]]:
    """Yields (token, log-prob) decoding over a KilnCache; appends KVStats at the end.

    choose: [vocab] log-probs -> token id (greedy or sampling). Query-agnostic compression
    (config.query_aware False with question_tokens q > 0) prefills and compresses the context
    prompt_ids[:-q] alone, then reads the question through the compressed cache, so the
    compression cannot know what will be asked (the setting where compression costs most).
    """
    use_kiln_attention(model)
    geometry = geometry_of(model)
    question: list[int] = []
    if not config.query_aware and config.question_tokens:
        if config.question_tokens >= len(prompt_ids):
            raise InvalidInput("kv.question_tokens", "must be shorter than the prompt")
        question = prompt_ids[-config.question_tokens :]
        prompt_ids = prompt_ids[: -config.question_tokens]
        config = replace(config, question_tokens=0)
    plan = plan_kv(config, len(prompt_ids), geometry)
    cache = KilnCache(plan, config, geometry, next(model.parameters()).dtype)
    device = next(model.parameters()).device
    position = len(prompt_ids)

    def step(token: int) -> torch.Tensor:
        nonlocal position
        logits = model(
            input_ids=torch.tensor([[token]], device=device),
            position_ids=torch.tensor([[position]], device=device),
            attention_mask=_NO_MASK,
            past_key_values=cache,
            use_cache=True,
        ).logits
        position += 1
        return logits

    try:
        with torch.inference_mode():
            logits = model(
                input_ids=torch.tensor([prompt_ids], device=device),
                position_ids=torch.arange(position, device=device).unsqueeze(0),
                attention_mask=_NO_MASK,
                past_key_values=cache,
                use_cache=True,
            ).logits
            for token in question:
                logits = step(token)
            for index in range(max_tokens):
                logprobs = logits[0, -1].float().log_softmax(-1)
                token = choose(logprobs)
                yield token, float(logprobs[token])
                if token == eos_token_id or index == max_tokens - 1 or (abort and abort.is_set()):
                    return
                logits = step(token)
    finally:
        if stats is not None:
            full = geometry.token_bytes() * cache.seen_tokens
            stats.append(KVStats(plan, cache.nbytes(), full, cache.tokens_per_layer()))


def batched_greedy(
    model: Any,
    prompts: list[list[int]],
    configs: list[KVConfig],
    max_tokens: int,
    eos_token_id: int | None,
) -> list[list[int]]:
    """Greedy decoding of several prompts at once, each over its own compressed cache (a
    different method, budget and bits per request). Returns each sequence's new tokens."""
    use_kiln_attention(model)
    geometry = geometry_of(model)
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    caches, tokens = [], []
    with torch.inference_mode():
        for ids, config in zip(prompts, configs, strict=True):
            cache = KilnCache(plan_kv(config, len(ids), geometry), config, geometry, dtype)
            logits = model(
                input_ids=torch.tensor([ids], device=device),
                position_ids=torch.arange(len(ids), device=device).unsqueeze(0),
                attention_mask=_NO_MASK,
                past_key_values=cache,
            ).logits
            caches.append(cache)
            tokens.append([int(logits[0, -1].argmax())])
        batch = BatchedKilnCache(caches)
        done = [t[-1] == eos_token_id for t in tokens]
        positions = [len(ids) for ids in prompts]
        for _ in range(max_tokens - 1):
            if all(done):
                break
            logits = model(
                input_ids=torch.tensor([[t[-1]] for t in tokens], device=device),
                position_ids=torch.tensor([[p] for p in positions], device=device),
                attention_mask=_NO_MASK,
                past_key_values=batch,
            ).logits
            for b, row in enumerate(tokens):
                positions[b] += 1
                if not done[b]:
                    row.append(int(logits[b, -1].argmax()))
                    done[b] = row[-1] == eos_token_id
    return tokens
