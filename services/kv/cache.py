"""The kiln KV cache: per-layer stores at grouped KV-head granularity, pruned at prefill and
quantized KIVI-style, with memory that is physically what the byte formula says.

One KilnCache holds one sequence. Each layer keeps (a) quantized blocks of R tokens: keys
per-channel and values per-token, packed codes + fp16 scale/zero, (b) a 16-bit residual of the
newest r < R tokens (storage_dtype), (c) int32 positions of kept tokens when pruned.
Appending never touches quantized history: a full residual is quantized as one new block.
Keys are stored after RoPE, so kept tokens keep their original positions; callers pass
position_ids explicitly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from services.kv.budget import CacheGeometry, KVConfig, KVPlan, QuantSpec
from services.kv.presses import adakv, h2o
from services.kv.presses.adakv import AdaKVConfig
from services.kv.quant import (
    Quantized,
    dequantize_per_channel,
    dequantize_per_token,
    quantize_per_channel,
    quantize_per_token,
)

# Decoder layers call cache.update() and then the attention function in the same thread;
# update() leaves the cache here for kiln_attention, so forward calls need no extra kwargs.
ACTIVE = threading.local()


def storage_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The 16-bit dtype full-precision tokens are stored in: the model's own when it is 16-bit,
    else float16 (float32 weights must not make a "16-bit" cache twice its planned size)."""
    return model_dtype if torch.finfo(model_dtype).bits == 16 else torch.float16


@dataclass
class LayerStore:
    """One layer of one sequence: [H, N, D] keys and values, stored compressed; full-precision
    tokens at 16 bits (storage_dtype), handed to attention in the model's dtype."""

    spec: QuantSpec
    dtype: torch.dtype  # the model's (compute) dtype
    track_positions: bool
    keys_q: Quantized | None = None  # every flushed block, concatenated along tokens
    values_q: Quantized | None = None
    residual_k: torch.Tensor | None = None  # [H, r, D]
    residual_v: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # int32 [H, N]
    scores: torch.Tensor | None = None  # H2O accumulated attention [H, N] (decode eviction)

    @property
    def tokens(self) -> int:
        residual = 0 if self.residual_k is None else self.residual_k.shape[1]
        return (self.keys_q.shape[1] if self.keys_q else 0) + residual

    def extend(
        self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor | None = None
    ) -> None:
        """Appends keys/values [H, T, D] (and their positions [H, T]); flushes full blocks."""
        stored = storage_dtype(self.dtype)
        keys, values = keys.to(stored), values.to(stored)
        if self.residual_k is None:
            self.residual_k, self.residual_v = keys, values
        else:
            self.residual_k = torch.cat([self.residual_k, keys], dim=1)
            self.residual_v = torch.cat([self.residual_v, values], dim=1)
        if self.track_positions and positions is not None:
            positions = positions.to(torch.int32)
            self.positions = (
                positions
                if self.positions is None
                else torch.cat([self.positions, positions], dim=1)
            )
        if self.spec.bits == 16:
            return
        block = self.spec.residual_length
        while self.residual_k.shape[1] >= block:
            k, self.residual_k = self.residual_k[:, :block], self.residual_k[:, block:]
            v, self.residual_v = self.residual_v[:, :block], self.residual_v[:, block:]
            self.keys_q = _append(
                self.keys_q, quantize_per_channel(k, self.spec.bits, self.spec.group_size)
            )
            self.values_q = _append(
                self.values_q, quantize_per_token(v, self.spec.bits, self.spec.group_size)
            )
        self.residual_k = self.residual_k.clone()  # drop views that pin flushed memory
        self.residual_v = self.residual_v.clone()

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized keys and values [H, N, D] in the model's dtype (transient): the
        reference that attention over the codes (quantized_attention) is tested against."""
        residual_k, residual_v = self.residual_k.to(self.dtype), self.residual_v.to(self.dtype)
        if self.keys_q is None:
            return residual_k, residual_v
        keys = dequantize_per_channel(self.keys_q, self.dtype)
        values = dequantize_per_token(self.values_q, self.dtype)
        return torch.cat([keys, residual_k], dim=1), torch.cat([values, residual_v], dim=1)

    @property
    def quantized_tokens(self) -> int:
        return self.keys_q.shape[1] if self.keys_q else 0

    def evict(self, index: torch.Tensor) -> None:
        """Removes token index[h] of each head h from a 16-bit store (decode-time eviction)."""
        keep = torch.ones_like(self.residual_k[..., 0], dtype=torch.bool)
        keep[torch.arange(keep.shape[0], device=keep.device), index] = False
        self.residual_k, self.residual_v = (
            _kept(self.residual_k, keep),
            _kept(self.residual_v, keep),
        )
        self._drop_bookkeeping(keep)

    def evict_group(self, group: torch.Tensor) -> None:
        """Removes quantization group group[h] (G consecutive quantized tokens) of each head h:
        their key and value codes, the group's per-channel key scale/zero and the tokens'
        per-token value scale/zero. What stays is decoded by its own scales: nothing is
        re-quantized, and every remaining key group still holds G tokens."""
        size = self.spec.group_size
        heads, tokens, _ = self.keys_q.shape
        device = self.keys_q.codes.device
        rows = torch.arange(heads, device=device)
        keep_groups = torch.ones(heads, tokens // size, dtype=torch.bool, device=device)
        keep_groups[rows, group] = False
        keep = keep_groups.repeat_interleave(size, dim=1)  # [H, tokens]
        keys, values = self.keys_q, self.values_q
        self.keys_q = Quantized(
            _kept(keys.codes, keep),
            _kept(keys.scale, keep_groups),
            _kept(keys.zero, keep_groups),
            keys.bits,
            (heads, tokens - size, keys.shape[2]),
        )
        self.values_q = Quantized(
            _kept(values.codes, keep),
            _kept(values.scale, keep),
            _kept(values.zero, keep),
            values.bits,
            (heads, tokens - size, values.shape[2]),
        )
        residual = torch.ones(heads, self.residual_k.shape[1], dtype=torch.bool, device=device)
        self._drop_bookkeeping(torch.cat([keep, residual], dim=1))

    def _drop_bookkeeping(self, keep: torch.Tensor) -> None:
        if self.positions is not None:
            self.positions = _kept(self.positions, keep)
        if self.scores is not None:
            self.scores = _kept(self.scores, keep)

    def nbytes(self) -> int:
        """Bytes physically held (codes, scales, zeros, residual, positions)."""
        total = sum(q.nbytes() for q in (self.keys_q, self.values_q) if q is not None)
        for tensor in (self.residual_k, self.residual_v, self.positions):
            if tensor is not None:
                total += tensor.numel() * tensor.element_size()
        return total


@dataclass
class HeadwiseStore:
    """One layer whose KV heads keep different numbers of tokens (AdaKV's per-head budgets):
    one single-head LayerStore per KV head, so each holds only its own tokens."""

    heads: list[LayerStore]

    @property
    def tokens(self) -> int:
        """Tokens per head, the mean rounded down."""
        return sum(head.tokens for head in self.heads) // len(self.heads)

    def extend(
        self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor | None = None
    ) -> None:
        """Appends keys/values [H, T, D] (and positions [H, T]), T to every head."""
        for h, head in enumerate(self.heads):
            at = slice(h, h + 1)
            head.extend(keys[at], values[at], None if positions is None else positions[at])

    def extend_selected(
        self, keys: torch.Tensor, values: torch.Tensor, indices: list[torch.Tensor]
    ) -> None:
        """Appends, to head h, the tokens indices[h] [N_h] of keys/values [H, T, D]."""
        for h, (head, index) in enumerate(zip(self.heads, indices, strict=True)):
            head.extend(keys[h : h + 1, index], values[h : h + 1, index], index.unsqueeze(0))

    def nbytes(self) -> int:
        return sum(head.nbytes() for head in self.heads)


def _kept(tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """tensor [H, N, ...] without the entries where keep [H, N] is False (the same number
    per head)."""
    return tensor[keep].reshape(tensor.shape[0], -1, *tensor.shape[2:])


def _append(history: Quantized | None, block: Quantized) -> Quantized:
    """history followed by block (codes and scales copied as they are, never re-quantized)."""
    if history is None:
        return block
    h, t, d = history.shape
    return Quantized(
        torch.cat([history.codes, block.codes], dim=1),
        torch.cat([history.scale, block.scale], dim=1),
        torch.cat([history.zero, block.zero], dim=1),
        history.bits,
        (h, t + block.shape[1], d),
    )


@dataclass
class PrefillState:
    """One layer's prompt while it is prefilled in chunks (transient, full precision)."""

    keys: torch.Tensor | None = None  # [Hkv, S, D], the S prompt tokens seen so far
    values: torch.Tensor | None = None
    queries: torch.Tensor | None = None  # [Hq, <= w, D], the newest w queries (SnapKV's window)
    scores: torch.Tensor | None = None  # [Hkv, S] H2O accumulated attention so far


class KilnCache:
    """KV cache of one sequence for a transformers decoder, driven by kiln_attention.

    During prefill (`prefilling` True) update() passes the prompt's keys through, and the
    attention function hands each chunk to prefill_chunk(), which keeps the prompt's keys,
    values, newest queries and H2O scores until the last chunk, then prunes and stores it
    (store_prefill). The selection is the one an unchunked prefill makes: SnapKV's window is
    the prompt's end, H2O's column sums add up over chunks.
    During decoding update() appends, and kiln_attention attends over the stored codes and the
    16-bit residual (services.kv.quantized_attention): the history is never dequantized. It
    also works as the cache of transformers' own `model.generate(..., past_key_values=cache)`
    on a model whose attention is kiln_attention.
    """

    is_compileable = False  # asked of every cache by transformers' generate()

    def __init__(
        self, plan: KVPlan, config: KVConfig, geometry: CacheGeometry, dtype: torch.dtype
    ) -> None:
        self.plan = plan
        self.config = config
        self.geometry = geometry
        self.prefilling = True
        self.seen_tokens = 0
        self.kept_per_head: list[list[int]] = []  # [layer][KV head] after prefill compression
        self.layers: list[LayerStore | HeadwiseStore] = [
            self._layer_store(dtype) for _ in range(geometry.num_layers)
        ]
        self.pending = [PrefillState() for _ in range(geometry.num_layers)]

    def _layer_store(self, dtype: torch.dtype) -> LayerStore | HeadwiseStore:
        """Per-head stores when AdaKV gives heads their own budgets, else one [H, N, D]."""
        if not self.config.adakv:
            return LayerStore(self.plan.spec, dtype, self.plan.pruned)
        heads = self.geometry.num_kv_heads
        stores = [LayerStore(self.plan.spec, dtype, self.plan.pruned) for _ in range(heads)]
        return HeadwiseStore(stores)

    # -- the transformers Cache surface used by decoder layers -----------------------------
    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: object,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ACTIVE.cache = self  # the attention call that follows in this thread reads it
        if self.prefilling:
            return key_states, value_states
        store = self.layers[layer_idx]
        new = key_states.shape[2]
        positions = torch.arange(
            self.seen_tokens, self.seen_tokens + new, device=key_states.device
        ).expand(key_states.shape[1], -1)
        store.extend(key_states[0], value_states[0], positions)
        if layer_idx == self.geometry.num_layers - 1:
            self.seen_tokens += new
        return key_states, value_states  # kiln_attention reads the store itself

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    # -- compression -------------------------------------------------------------------------
    def prefill_chunk(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scaling: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of the prompt through one layer: query [Hq, c, D], key/value [Hkv, c, D]
        for the c positions after the S - c already seen. Returns the layer's prompt keys and
        values so far [Hkv, S, D] for the chunk's attention; after the prompt's last chunk
        (S = plan.sequence_length) the layer is selected and stored."""
        state = self.pending[layer_idx]
        keys = key if state.keys is None else torch.cat([state.keys, key], dim=1)
        values = value if state.values is None else torch.cat([state.values, value], dim=1)
        if self.needs_accumulated_attention:
            scores = h2o.accumulated_attention(query, keys, scaling)
            if state.scores is not None:
                scores[:, : state.scores.shape[1]] += state.scores
            state.scores = scores
        queries = query if state.queries is None else torch.cat([state.queries, query], dim=1)
        state.queries = queries[:, -self.query_window :]
        if keys.shape[1] < self.plan.sequence_length:
            state.keys, state.values = keys, values
        else:
            self.store_prefill(layer_idx, state.queries, keys, values, scaling, state.scores)
            self.pending[layer_idx] = PrefillState()
        return keys, values

    def store_prefill(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        scaling: float,
        scores: torch.Tensor | None = None,
    ) -> None:
        """Selects the kept tokens of one layer and stores them. query [Hq, w, D] (the prompt's
        last w = query_window queries, or more), key/value [Hkv, T, D], scores [Hkv, T] (H2O's
        accumulated attention over the whole prompt; None for the other methods)."""
        hkv, t, _ = key.shape
        budget = self.plan.tokens_per_layer[layer_idx]
        indices = self._select(layer_idx, query, key, budget, scaling, scores)
        store = self.layers[layer_idx]
        if indices is None:
            store.extend(key, value, torch.arange(t, device=key.device).expand(hkv, -1))
        elif isinstance(indices, list):
            store.extend_selected(key, value, indices)
        else:
            gather = indices.unsqueeze(-1).expand(-1, -1, key.shape[-1])
            store.extend(key.gather(1, gather), value.gather(1, gather), indices)
        if self.needs_attention_probs:
            store.scores = scores if indices is None else scores.gather(1, indices)
        if layer_idx == self.geometry.num_layers - 1:
            self.seen_tokens = t
            self.prefilling = False
            self.kept_per_head = self.tokens_per_head()

    def _select(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        budget: int,
        scaling: float,
        scores: torch.Tensor | None,
    ) -> torch.Tensor | list[torch.Tensor] | None:
        """Kept indices: [Hkv, budget], one [N_h] per head under AdaKV, None for all."""
        config, press = self.config, self.config.press
        if budget >= key.shape[1] or press is None:
            return None
        if not config.adakv:
            return press.select(query, key, budget, scaling, scores, config)
        spec = self.plan.spec
        block = 1 if spec.bits == 16 else spec.residual_length
        wanted = press.token_scores(query, key, budget, scaling, scores, config)
        return adakv.select(wanted, budget, AdaKVConfig(config.adakv_safeguard), block)

    @property
    def query_window(self) -> int:
        """The prompt's last queries the selection reads: SnapKV's observation window, ending
        before the question when query-agnostic (at least one)."""
        question = 0 if self.config.query_aware else self.config.question_tokens
        return max(1, self.config.window + question)

    @property
    def needs_accumulated_attention(self) -> bool:
        """The press selects by the prompt's accumulated attention (H2O), and evicts by it
        while decoding."""
        press = self.config.press
        return bool(press and press.accumulates_attention)

    @property
    def needs_attention_probs(self) -> bool:
        """Decode-time eviction by attention accumulates each step's probabilities."""
        return self.config.compress_decode and self.needs_accumulated_attention

    def after_decode_attention(self, layer_idx: int, probs: torch.Tensor | None) -> None:
        """Decode-time eviction against the plan's decode capacity (compress_decode).

        probs [Hq, 1, N]: this step's attention over the layer's N stored tokens (H2O only).
        16-bit: one token leaves per token decoded beyond the capacity; b-bit: when a flushed
        block pushes the quantized history over its capacity, whole G-token groups leave.
        Which ones the press says (Press.evict_token, Press.evict_group).
        """
        config = self.config
        if not config.compress_decode:
            return
        store = self.layers[layer_idx]
        if probs is not None:
            group = probs.shape[0] // store.residual_k.shape[0]
            step = probs[:, 0].float().reshape(-1, group, probs.shape[-1]).mean(1)  # [Hkv, N]
            previous = store.scores
            if previous is None:
                previous = step.new_zeros(step.shape[0], 0)
            padding = step.new_zeros(step.shape[0], step.shape[1] - previous.shape[1])
            store.scores = torch.cat([previous, padding], dim=1) + step  # newest starts at 0
        capacity = self.plan.decode_tokens[layer_idx]
        press = config.press
        if store.spec.bits == 16:
            if store.tokens > capacity:
                store.evict(press.evict_token(store, capacity, config))
            return
        block = store.spec.residual_length
        while store.quantized_tokens > capacity - (block - 1):
            store.evict_group(press.evict_group(store, config))

    # -- accounting -----------------------------------------------------------------------------
    def tokens_per_layer(self) -> list[int]:
        return [store.tokens for store in self.layers]

    def tokens_per_head(self) -> list[list[int]]:
        """[layer][KV head] tokens held (equal across a layer's heads unless AdaKV)."""
        return [
            [head.tokens for head in store.heads]
            if isinstance(store, HeadwiseStore)
            else [store.tokens] * self.geometry.num_kv_heads
            for store in self.layers
        ]

    def nbytes(self) -> int:
        return sum(store.nbytes() for store in self.layers)


class BatchedKilnCache:
    """Decodes several sequences together, each with its own KilnCache (its own method,
    budget and bits). Each sequence is prefilled alone (its compression needs its own
    attention); decoding steps then take one token per sequence, [B, 1]: update() appends
    row b to sequence b's cache, and kiln_attention attends each row over its own store.
    """

    is_compileable = False

    def __init__(self, caches: list[KilnCache]) -> None:
        if any(c.prefilling for c in caches):
            raise ValueError("prefill every sequence before batching it")
        self.caches = caches

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: object,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for b, cache in enumerate(self.caches):
            cache.update(key_states[b : b + 1], value_states[b : b + 1], layer_idx)
        ACTIVE.cache = self
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(cache.seen_tokens for cache in self.caches)
