"""KIVI quantization: error bounds, exact packing, idempotent re-quantization."""

from __future__ import annotations

import pytest
import torch

from services.kv.quant import (
    dequantize_per_channel,
    dequantize_per_token,
    pack,
    quantize_per_channel,
    quantize_per_token,
    unpack,
)


def test_pack_by_hand() -> None:
    assert pack(torch.tensor([1, 2, 3, 0]), 2).tolist() == [1 | 2 << 2 | 3 << 4 | 0 << 6]
    assert pack(torch.tensor([0xA, 0x5]), 4).tolist() == [0x5A]
    assert pack(torch.tensor([7, 255]), 8).tolist() == [7, 255]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_unpack_exact(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (3, 5, 64), generator=torch.Generator().manual_seed(bits))
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 5, 64 * bits // 8)
    assert torch.equal(unpack(packed, bits), codes.to(torch.uint8))


def fp16_slack(value: torch.Tensor) -> torch.Tensor:
    """An upper bound of the fp16 rounding error of value."""
    return value.abs() * 2.0**-11 + 2.0**-24


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group", [16, 32])
def test_error_within_half_step_per_group(bits: int, group: int) -> None:
    levels = 2**bits - 1
    x = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(bits * group)) * 3
    # values: groups of `group` channels per token
    q = quantize_per_token(x, bits, group)
    err = (dequantize_per_token(q) - x).abs().reshape(2, 64, 64 // group, group)
    grouped = x.reshape(2, 64, 64 // group, group)
    lo, hi = grouped.amin(-1), grouped.amax(-1)
    step = (hi - lo) / levels
    bound = step / 2 + levels * fp16_slack(step) + fp16_slack(lo)
    assert (err.amax(-1) <= bound + 1e-6).all()
    # keys: groups of `group` tokens per channel
    qk = quantize_per_channel(x, bits, group)
    errk = (dequantize_per_channel(qk) - x).abs().reshape(2, 64 // group, group, 64)
    groupedk = x.reshape(2, 64 // group, group, 64)
    lok, hik = groupedk.amin(2), groupedk.amax(2)
    stepk = (hik - lok) / levels
    boundk = stepk / 2 + levels * fp16_slack(stepk) + fp16_slack(lok)
    assert (errk.amax(2) <= boundk + 1e-6).all()
    assert q.scale.dtype == torch.float16 and q.zero.dtype == torch.float16
    assert q.scale.shape == (2, 64, 64 // group) and qk.scale.shape == (2, 64 // group, 64)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_requantizing_dequantized_values_reproduces_codes(bits: int) -> None:
    x = torch.randn(2, 32, 64, generator=torch.Generator().manual_seed(7))
    for quantize, dequantize in (
        (quantize_per_token, dequantize_per_token),
        (quantize_per_channel, dequantize_per_channel),
    ):
        first = quantize(x, bits, 32)
        again = quantize(dequantize(first), bits, 32)
        assert torch.equal(again.codes, first.codes)
        assert torch.equal(again.scale, first.scale) and torch.equal(again.zero, first.zero)


def test_bytes_are_packed_codes_plus_fp16_params() -> None:
    q = quantize_per_token(torch.randn(4, 32, 64), 2, 32)
    # codes 4*32*64*2/8 = 2048 bytes; scale and zero: 4*32*(64/32) = 256 fp16 each = 1024
    assert q.nbytes() == 2048 + 1024
