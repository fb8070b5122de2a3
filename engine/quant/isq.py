"""In-situ quantization: dense weights -> GroupQuant (int4 group-wise asymmetric, int8 and fp8 per-channel symmetric)."""

from __future__ import annotations

import torch

from engine.quant.group_quant import GroupQuant

INT4_GROUP = 32
FP8_MAX = 448.0  # the largest finite float8_e4m3fn


def quantize_int4(weight: torch.Tensor, group: int = INT4_GROUP) -> GroupQuant:
    """Asymmetric min/max 4-bit codes per `group` input columns (the Q4_1 recipe)."""
    rows, cols = weight.shape
    w = weight.detach().float().reshape(rows, cols // group, group)
    lo, hi = w.amin(-1), w.amax(-1)
    scale = (hi - lo) / 15
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = ((w - lo[..., None]) / safe[..., None]).round().clamp(0, 15).to(torch.uint8)
    return GroupQuant(codes.reshape(rows, cols), scale, lo, group, 4)


def quantize_int8(weight: torch.Tensor | GroupQuant, chunk_rows: int = 4096) -> GroupQuant:
    """Symmetric 8-bit codes with one scale per output row (what `_weight_int8pack_mm` takes).

    Takes dense weights or another GroupQuant (re-quantized); works through `chunk_rows` rows at a
    time so a large embedding never exists as a whole float32 copy.
    """
    return _per_row(weight, chunk_rows, torch.int8, 127.0, lambda x: x.round_().clamp_(-127, 127))


def quantize_fp8(weight: torch.Tensor | GroupQuant, chunk_rows: int = 4096) -> GroupQuant:
    """float8_e4m3fn codes with one scale per output row (scale = row amax / 448), as quantize_int8.

    e4m3 keeps 3 mantissa bits: each weight is within 2**-4 of itself relatively, or within
    2**-10 * scale absolutely for the smallest (subnormal) codes. Clamped before the cast: some torch
    versions turn values past 448 into NaN rather than saturating.
    """
    return _per_row(weight, chunk_rows, torch.float8_e4m3fn, FP8_MAX, lambda x: x.clamp_(-FP8_MAX, FP8_MAX))


def _per_row(weight: torch.Tensor | GroupQuant, chunk_rows: int, dtype: torch.dtype, top: float,
             to_code) -> GroupQuant:
    """Codes of `dtype` with scale = row amax / top, chunk by chunk; `to_code` rounds/clamps w / scale."""
    rows, cols = weight.shape
    codes = torch.empty(rows, cols, dtype=dtype)
    scale = torch.empty(rows, 1, dtype=torch.float32)
    for lo in range(0, rows, chunk_rows):
        part = slice(lo, min(lo + chunk_rows, rows))
        w = weight.rows(part).dequantize() if isinstance(weight, GroupQuant) else weight[part].detach().float()
        s = w.abs().amax(-1, keepdim=True) / top
        scale[part] = s
        codes[part] = to_code(w / torch.where(s > 0, s, torch.ones_like(s))).to(dtype)
    return GroupQuant(codes, scale, None, cols, 8)
