"""Decode attention read straight from the quantized cache's codes: the history is never
dequantized.

Keys are quantized per channel in groups of G tokens (KIVI): token n of key group j = n // G
is k[n, d] = c[n, d] s[j, d] + z[j, d]. For one query q [D], the key scale folds into the
query and the zero point is one dot product per group:

    q . k[n] = sum_d (q[d] s[j, d]) c[n, d] + sum_d q[d] z[j, d]                      (1)

Values are quantized per token in groups of G channels: v[n, d] = c[n, d] s[n, i] + z[n, i]
with i = d // G. For attention weights p [N], the value scale folds into the weights and the
zero point is one weighted sum per channel group:

    sum_n p[n] v[n, d] = sum_n (p[n] s[n, i]) c[n, d] + sum_n p[n] z[n, i]            (2)

The 16-bit residual is attended as stored, and one softmax normalizes over both parts. The
zero points never meet the codes: they enter as one [D] vector per key group and one [D/G]
vector per token. The scale products of (1) and (2) are formed on the codes, CHUNK_TOKENS
tokens at a time: a chunk is unpacked, widened to float32 (small integers are exact) and
multiplied by its scales in place, then attended as one matrix product per KV head. So the
stored history stays packed, and what exists beyond it is one transient chunk (3 MiB for
4,096 tokens of 3 KV heads x 64 dims), never the model-dtype keys and values of the whole
history. Folding the scales into the chunk rather than into a query per key group makes the
same products with one large matrix product instead of one small one per group. Equal to
dequantize-then-attend up to float rounding (tests/unit/test_quantized_attention.py).
"""

from __future__ import annotations

import torch

from services.kv.cache import HeadwiseStore, LayerStore
from services.kv.quant import unpack

CHUNK_TOKENS = 4096


def attend(
    query: torch.Tensor,
    store: LayerStore | HeadwiseStore,
    scaling: float,
    want_probs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One decode step of one sequence over one layer's store.

    query [Hq, 1, D] (Hq a multiple of the store's Hkv heads; query head h reads KV head
    h // (Hq / Hkv)) -> (output [Hq, 1, D] in the query's dtype, the attention probabilities
    [Hq, 1, N] over the N stored tokens, oldest first, when want_probs, else None). A
    HeadwiseStore (heads of different lengths) is attended head by head, without probs.
    """
    if isinstance(store, HeadwiseStore):
        group = query.shape[0] // len(store.heads)
        outs = [
            attend(query[h * group : (h + 1) * group], head, scaling)[0]
            for h, head in enumerate(store.heads)
        ]
        return torch.cat(outs), None
    heads, _, dim = store.residual_k.shape
    q_heads = query.shape[0]
    if query.shape[1] != 1:
        raise ValueError("attend decodes one token at a time")
    group = q_heads // heads
    q = query[:, 0].float().reshape(heads, group, dim) * scaling  # [Hkv, g, D]
    quantized = store.quantized_tokens
    logits = q.new_empty(heads, group, quantized + store.residual_k.shape[1])  # [Hkv, g, N]
    for start in range(0, quantized, CHUNK_TOKENS):
        end = min(start + CHUNK_TOKENS, quantized)
        logits[..., start:end] = _key_logits(q, store, start)
    logits[..., quantized:] = q @ store.residual_k.float().transpose(-1, -2)
    probs = logits.softmax(-1)
    out = probs[..., quantized:] @ store.residual_v.float()
    for start in range(0, quantized, CHUNK_TOKENS):
        out += _value_sum(probs[..., start : min(start + CHUNK_TOKENS, quantized)], store, start)
    out = out.reshape(q_heads, 1, dim).to(query.dtype)
    return out, probs.reshape(q_heads, 1, -1) if want_probs else None


def _key_logits(q: torch.Tensor, store: LayerStore, start: int) -> torch.Tensor:
    """Eq. (1) for the quantized tokens [start, start + CHUNK_TOKENS): q [Hkv, g, D] ->
    logits [Hkv, g, C]. The scales multiply the chunk's widened codes in place (the same
    products as q[d] s[j, d] c[n, d]), so the chunk is one [g, D] x [D, C] product per head."""
    keys = store.keys_q
    size = store.spec.group_size
    end = min(start + CHUNK_TOKENS, store.quantized_tokens)
    heads, _, dim = keys.shape
    groups = slice(start // size, end // size)
    scale, zero = keys.scale[:, groups].float(), keys.zero[:, groups].float()  # [Hkv, C/G, D]
    codes = unpack(keys.codes[:, start:end], keys.bits).float()  # [Hkv, C, D]
    codes.view(heads, -1, size, dim).mul_(scale.unsqueeze(2))
    logits = q @ codes.transpose(-1, -2)  # [Hkv, g, C]
    offsets = q @ zero.transpose(-1, -2)  # [Hkv, g, C/G]: sum_d q[d] z[j, d]
    groups_of = logits.view(heads, q.shape[1], -1, size)
    return (groups_of + offsets.unsqueeze(-1)).flatten(2)


def _value_sum(probs: torch.Tensor, store: LayerStore, start: int) -> torch.Tensor:
    """Eq. (2) for the quantized tokens [start, start + C): probs [Hkv, g, C] -> [Hkv, g, D].
    The per-token scales multiply the chunk's widened codes in place (the same products as
    (p[n] s[n, i]) c[n, d]): one [g, C] x [C, D] product per head."""
    values = store.values_q
    size = store.spec.group_size
    end = start + probs.shape[-1]
    heads, _, dim = values.shape
    scale, zero = values.scale[:, start:end].float(), values.zero[:, start:end].float()
    codes = unpack(values.codes[:, start:end], values.bits).float()  # [Hkv, C, D]
    codes.view(heads, -1, dim // size, size).mul_(scale.unsqueeze(-1))
    summed = probs @ codes  # [Hkv, g, D]
    offsets = probs @ zero  # [Hkv, g, D/G]: sum_n p[n] z[n, i]
    return summed + offsets.repeat_interleave(size, dim=-1)
