"""Attention over quantized codes equals dequantize-then-attend (eqs. 1-2 of
services/kv/quantized_attention.py)."""

from __future__ import annotations

import pytest
import torch

from services.kv import quantized_attention
from services.kv.budget import QuantSpec
from services.kv.cache import LayerStore


def filled_store(tokens: int, bits: int, heads: int = 3, dim: int = 64) -> LayerStore:
    generator = torch.Generator().manual_seed(tokens * 10 + bits)
    store = LayerStore(QuantSpec(bits, 32, 32), torch.float32, track_positions=False)
    keys = torch.randn(heads, tokens, dim, generator=generator) * 2 + 0.5
    values = torch.randn(heads, tokens, dim, generator=generator)
    for start in range(0, tokens, 7):  # appended in uneven pieces, as decoding does
        store.extend(keys[:, start : start + 7], values[:, start : start + 7])
    return store


def reference(query: torch.Tensor, store: LayerStore, scaling: float):
    """The dequantize-then-attend path: the whole history dequantized, then softmax attention."""
    keys, values = store.keys_values()  # [Hkv, N, D]
    group = query.shape[0] // keys.shape[0]
    keys, values = keys.repeat_interleave(group, 0), values.repeat_interleave(group, 0)
    probs = (query.float() @ keys.float().transpose(-1, -2) * scaling).softmax(-1)
    return probs @ values.float(), probs


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("tokens", [31, 200, 2500])
def test_attention_over_codes_equals_dequantize_then_attend(bits: int, tokens: int) -> None:
    store = filled_store(tokens, bits)
    quantized = tokens - tokens % 32 if bits < 16 else 0
    assert store.quantized_tokens == quantized
    query = torch.randn(9, 1, 64, generator=torch.Generator().manual_seed(1))
    out, probs = quantized_attention.attend(query, store, 0.125, want_probs=True)
    expected_out, expected_probs = reference(query, store, 0.125)
    assert out.shape == (9, 1, 64) and probs.shape == (9, 1, tokens)
    torch.testing.assert_close(probs, expected_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, expected_out, rtol=1e-4, atol=1e-5)
    assert quantized_attention.attend(query, store, 0.125)[1] is None


def test_more_than_one_chunk_of_codes_is_read_chunk_by_chunk(monkeypatch) -> None:
    store = filled_store(300, 4)
    query = torch.randn(9, 1, 64, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(quantized_attention, "CHUNK_TOKENS", 64)  # 256 quantized: 4 chunks
    chunked, probs = quantized_attention.attend(query, store, 0.125, want_probs=True)
    expected_out, expected_probs = reference(query, store, 0.125)
    torch.testing.assert_close(probs, expected_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked, expected_out, rtol=1e-4, atol=1e-5)
