"""KIVI-style asymmetric min/max quantization with genuine bit packing.

KIVI ("KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache"): keys are quantized
per channel (a group is G consecutive tokens of one channel), values per token (a group is G
consecutive channels of one token). For a group x with m = min x, M = max x and b bits:

    scale = (M - m) / (2^b - 1),  code = clamp(round((x - m) / scale), 0, 2^b - 1),
    x_hat = code * scale + m,     so |x - x_hat| <= scale / 2 (plus fp16 rounding of scale, m).

Scales and zero points (m) are stored in fp16; codes are packed 8/b per byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BITS = (2, 4, 8)


@dataclass
class Quantized:
    """Packed codes and per-group fp16 scale/zero of one tensor.

    codes: uint8 [..., n * bits / 8] packed along the last axis of the original layout.
    scale, zero: fp16, one per group (shapes depend on the grouping axis).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    shape: tuple[int, ...]

    def nbytes(self) -> int:
        return (
            self.codes.numel() * self.codes.element_size()
            + self.scale.numel() * self.scale.element_size()
            + self.zero.numel() * self.zero.element_size()
        )


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Packs integer codes in [0, 2^bits) along the last axis: [..., n] -> uint8 [..., n*b/8]."""
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}")
    per_byte = 8 // bits
    if codes.shape[-1] % per_byte:
        raise ValueError(f"last axis {codes.shape[-1]} is not a multiple of {per_byte}")
    grouped = codes.to(torch.uint8).reshape(*codes.shape[:-1], -1, per_byte)
    packed = torch.zeros(grouped.shape[:-1], dtype=torch.uint8, device=codes.device)
    for i in range(per_byte):
        packed |= grouped[..., i] << (bits * i)
    return packed


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of pack: uint8 [..., m] -> uint8 codes [..., m * 8/b]."""
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * i)) & mask for i in range(per_byte)]
    return torch.stack(parts, dim=-1).reshape(*packed.shape[:-1], -1)


def _quantize_groups(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: [..., G] groups on the last axis -> (codes uint8 [..., G], scale [..., 1], zero)."""
    levels = (1 << bits) - 1
    lo = x.amin(dim=-1, keepdim=True).to(torch.float16)
    hi = x.amax(dim=-1, keepdim=True)
    scale = ((hi - lo.float()) / levels).to(torch.float16)
    safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
    codes = torch.clamp(torch.round((x.float() - lo.float()) / safe), 0, levels)
    return codes.to(torch.uint8), scale, lo


def quantize_per_token(x: torch.Tensor, bits: int, group_size: int) -> Quantized:
    """Values: x [H, T, D], groups of group_size channels per token.

    scale/zero: fp16 [H, T, D/G]; codes packed along D.
    """
    h, t, d = x.shape
    if d % group_size:
        raise ValueError(f"head_dim {d} is not a multiple of group_size {group_size}")
    codes, scale, zero = _quantize_groups(x.reshape(h, t, d // group_size, group_size), bits)
    return Quantized(
        pack(codes.reshape(h, t, d), bits), scale.squeeze(-1), zero.squeeze(-1), bits, (h, t, d)
    )


def dequantize_per_token(q: Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    h, t, d = q.shape
    codes = unpack(q.codes, q.bits).reshape(h, t, q.scale.shape[-1], -1).float()
    x = codes * q.scale.float().unsqueeze(-1) + q.zero.float().unsqueeze(-1)
    return x.reshape(h, t, d).to(dtype)


def quantize_per_channel(x: torch.Tensor, bits: int, group_size: int) -> Quantized:
    """Keys: x [H, T, D], groups of group_size tokens per channel (T a multiple of G).

    scale/zero: fp16 [H, T/G, D]; codes packed along D (token-major layout kept).
    """
    h, t, d = x.shape
    if t % group_size:
        raise ValueError(f"{t} tokens is not a multiple of group_size {group_size}")
    grouped = x.reshape(h, t // group_size, group_size, d).transpose(-1, -2)  # [H, T/G, D, G]
    codes, scale, zero = _quantize_groups(grouped, bits)
    codes = codes.transpose(-1, -2).reshape(h, t, d)
    return Quantized(pack(codes, bits), scale.squeeze(-1), zero.squeeze(-1), bits, (h, t, d))


def dequantize_per_channel(q: Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    h, t, d = q.shape
    groups = q.scale.shape[1]
    codes = unpack(q.codes, q.bits).reshape(h, groups, t // groups, d).float()
    x = codes * q.scale.float().unsqueeze(2) + q.zero.float().unsqueeze(2)
    return x.reshape(h, t, d).to(dtype)
