"""Weight-only int4 and int8 matmuls for bf16 activations on AVX512-BF16 CPUs (cpu_quant_matmul.cpp).

- `int4_mm(x, packed, group, scales_offsets)`: x W^T for W = q * scale + offset per group of input
  columns, scales and offsets f16 [K / group, 2, N] (GGUF Q4_0 / Q4_1 keep theirs exactly).
- `int8_mm(x, packed, group, scale)`: x W^T for W = q * scale per group of input columns (f32
  scales [K / group, N]: GGUF Q8_0's own blocks of 32 exactly, or one group of K for a scale per row).

Codes are widened to bf16 once per 16-column tile for up to 8 rows and multiplied on vdpbf16ps:
~2x PyTorch's kernels at 1 to 512 rows (theirs widen to fp32 per block of 4 rows and are bound by
fp32 FMAs at decode batch sizes). `pack_int4` / `pack_int8` lay weights out for them, `unpack_*`
invert that, `dequantize_int4` and `int8_rows` read weights back; the definition of correct is
fp32 dequantize-then-matmul. `enabled()` says whether to use them: the extension built, the CPU
has AVX512-BF16, and AGENT_RUNTIME_CPU_QUANT is not "torch".
"""

from __future__ import annotations

import os

import torch

from agent_kernels import cpu_extension

__all__ = ["dequantize_int4", "enabled", "int4_mm", "int8_mm", "int8_rows", "pack_int4", "pack_int8", "scales_offsets",
           "unpack_int4", "unpack_int8"]


def enabled() -> bool:
    """Whether quantized CPU weights should be packed for these kernels (builds the extension the first time)."""
    if os.environ.get("AGENT_RUNTIME_CPU_QUANT", "").lower() == "torch":
        return False
    return cpu_extension.load() and bool(torch.ops.agent_runtime_cpu.bf16_matmul_supported())


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Codes [N, K] (0..15; N % 16 == 0, K % 4 == 0) -> uint8 [N // 16, K // 4, 32] (cpu_quant_matmul.cpp)."""
    n, k = codes.shape
    if n % 16 or k % 4:
        raise ValueError(f"int4 pack needs out_features % 16 == 0 and in_features % 4 == 0, got {n} x {k}")
    q = codes.to(torch.uint8).view(n // 16, 16, k // 4, 2, 2)  # [tile, column, quad, nibble, j]
    q = q.permute(0, 2, 3, 1, 4)  # [tile, quad, nibble, column, j]
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n // 16, k // 4, 32).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The codes [N, K] (uint8) that `pack_int4` laid out."""
    tiles, quads, _ = packed.shape
    b = packed.view(tiles, quads, 1, 16, 2)
    q = torch.cat([b & 0x0F, b >> 4], dim=2)  # [tile, quad, nibble, column, j]
    return q.permute(0, 3, 1, 2, 4).reshape(tiles * 16, quads * 4).contiguous()


def scales_offsets(scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor | None:
    """GroupQuant's scale and offset [N, K / group] as int4_mm's f16 [K / group, 2, N], or None where f16
    would lose them: beyond f16's range, or a scale (an offset) moved by more than 2^-10 of itself (of
    its group's weight range) by the rounding. GGUF's own f16 values are exact, subnormal ones too."""
    scale, offset = scale.float(), offset.float()
    half = torch.stack([scale, offset]).to(torch.float16)  # [2, N, G]
    back = half.float()
    if not torch.isfinite(back).all():
        return None
    if ((back[0] - scale).abs() > scale.abs() * 2.0**-10).any():
        return None
    if ((back[1] - offset).abs() > (offset.abs() + 16 * scale.abs()) * 2.0**-10).any():
        return None
    return half.permute(2, 0, 1).contiguous()


def dequantize_int4(packed: torch.Tensor, scales_offsets: torch.Tensor, group: int) -> torch.Tensor:
    """The fp32 weight [N, K] int4_mm multiplies by."""
    codes = unpack_int4(packed).float()
    scale = scales_offsets[:, 0].float().t().repeat_interleave(group, dim=1)  # [N, K]
    offset = scales_offsets[:, 1].float().t().repeat_interleave(group, dim=1)
    return codes * scale + offset


def pack_int8(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes [N, K] (N % 16 == 0, K % 2 == 0) -> int8 [N // 16, K // 2, 32] (cpu_quant_matmul.cpp)."""
    n, k = codes.shape
    if n % 16 or k % 2:
        raise ValueError(f"int8 pack needs out_features % 16 == 0 and in_features % 2 == 0, got {n} x {k}")
    return codes.to(torch.int8).view(n // 16, 16, k // 2, 2).permute(0, 2, 1, 3).reshape(n // 16, k // 2, 32).contiguous()


def int8_rows(packed: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `index` (any shape) of the int8 codes `pack_int8` laid out: index.shape + [K]."""
    tiles, pairs, _ = packed.shape
    flat = index.reshape(-1)
    rows = packed.view(tiles, pairs, 16, 2)[flat // 16, :, flat % 16]  # [len, K // 2, 2]
    return rows.reshape(*index.shape, pairs * 2)


def unpack_int8(packed: torch.Tensor) -> torch.Tensor:
    """The codes [N, K] that `pack_int8` laid out."""
    tiles, pairs, _ = packed.shape
    return packed.view(tiles, pairs, 16, 2).permute(0, 2, 1, 3).reshape(tiles * 16, pairs * 2).contiguous()


def int4_mm(x: torch.Tensor, packed: torch.Tensor, group: int, scales_offsets: torch.Tensor) -> torch.Tensor:
    """x [M, K] bf16 contiguous -> [M, N] bf16."""
    return torch.ops.agent_runtime_cpu.int4_mm(x, packed, group, scales_offsets)


def int8_mm(x: torch.Tensor, packed: torch.Tensor, group: int, scale: torch.Tensor) -> torch.Tensor:
    """x [M, K] bf16 contiguous, scale [K // group, N] f32 -> [M, N] bf16."""
    return torch.ops.agent_runtime_cpu.int8_mm(x, packed, group, scale)
