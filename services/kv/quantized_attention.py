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

The 16-bit residual is attended as stored, and one softmax normalizes over both parts. Codes
are unpacked and widened CHUNK_TOKENS tokens at a time (float32: small integers are exact), so
no copy of the history exists at any precision; what (1) and (2) add over the codes is a
[D] vector per key group and a [D/G] vector per token. Equal to dequantize-then-attend up to
float rounding (tests/unit/test_quantized_attention.py).
"""

from __future__ import annotations

import torch

from services.kv.cache import HeadwiseStore, LayerStore
from services.kv.quant import unpack

CHUNK_TOKENS = 1024


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
    logits = [_key_logits(q, store, start) for start in range(0, quantized, CHUNK_TOKENS)]
    logits.append(torch.einsum("hgd,hnd->hgn", q, store.residual_k.float()))
    probs = torch.cat(logits, dim=-1).softmax(-1)  # [Hkv, g, N]
    out = torch.einsum("hgn,hnd->hgd", probs[..., quantized:], store.residual_v.float())
    for start in range(0, quantized, CHUNK_TOKENS):
        out += _value_sum(probs[..., start : min(start + CHUNK_TOKENS, quantized)], store, start)
    out = out.reshape(q_heads, 1, dim).to(query.dtype)
    return out, probs.reshape(q_heads, 1, -1) if want_probs else None


def _key_logits(q: torch.Tensor, store: LayerStore, start: int) -> torch.Tensor:
    """Eq. (1) for the quantized tokens [start, start + CHUNK_TOKENS): q [Hkv, g, D] ->
    logits [Hkv, g, C]."""
    keys = store.keys_q
    size = store.spec.group_size
    end = min(start + CHUNK_TOKENS, store.quantized_tokens)
    heads, _, dim = keys.shape
    codes = unpack(keys.codes[:, start:end], keys.bits).float()  # [Hkv, C, D]
    codes = codes.reshape(heads, -1, size, dim)  # [Hkv, C/G, G, D]
    groups = slice(start // size, end // size)
    scale, zero = keys.scale[:, groups].float(), keys.zero[:, groups].float()  # [Hkv, C/G, D]
    folded = q.unsqueeze(2) * scale.unsqueeze(1)  # [Hkv, g, C/G, D]
    logits = torch.einsum("hgjd,hjkd->hgjk", folded, codes)  # [Hkv, g, C/G, G]
    offsets = torch.einsum("hgd,hjd->hgj", q, zero).unsqueeze(-1)  # [Hkv, g, C/G, 1]
    return (logits + offsets).flatten(2)


def _value_sum(probs: torch.Tensor, store: LayerStore, start: int) -> torch.Tensor:
    """Eq. (2) for the quantized tokens [start, start + C): probs [Hkv, g, C] -> [Hkv, g, D]."""
    values = store.values_q
    size = store.spec.group_size
    end = start + probs.shape[-1]
    heads, _, dim = values.shape
    codes = unpack(values.codes[:, start:end], values.bits).float()  # [Hkv, C, D]
    codes = codes.reshape(heads, -1, dim // size, size)  # [Hkv, C, D/G, G]
    scale, zero = values.scale[:, start:end].float(), values.zero[:, start:end].float()
    weights = probs.unsqueeze(-1) * scale.unsqueeze(1)  # [Hkv, g, C, D/G]
    summed = torch.einsum("hgni,hnik->hgik", weights, codes).flatten(2)  # [Hkv, g, D]
    offsets = torch.einsum("hgn,hni->hgi", probs, zero)  # [Hkv, g, D/G]
    return summed + offsets.repeat_interleave(size, dim=-1)
