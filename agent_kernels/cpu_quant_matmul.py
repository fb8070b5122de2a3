"""Weight-only int4 and int8 matmuls for bf16 activations on AVX512-BF16 CPUs (cpu_quant_matmul.cpp).

- `int4_mm(x, packed, group, scales_zeros)`: x W^T for W = (q - 8) * scale + zero per group of
  input columns (the convention and the scales_zeros tensor of PyTorch's
  `aten._weight_int4pack_mm_for_cpu`).
- `int8_mm(x, packed, scale)`: (x q^T) * scale per output row (`aten._weight_int8pack_mm`'s).

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

__all__ = ["dequantize_int4", "enabled", "int4_mm", "int8_mm", "int8_rows", "pack_int4", "pack_int8", "unpack_int4",
           "unpack_int8"]


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


def dequantize_int4(packed: torch.Tensor, scales_zeros: torch.Tensor, group: int) -> torch.Tensor:
    """The fp32 weight [N, K] int4_mm multiplies by."""
    codes = unpack_int4(packed).float()
    scale = scales_zeros[..., 0].float().t().repeat_interleave(group, dim=1)  # [N, K]
    zero = scales_zeros[..., 1].float().t().repeat_interleave(group, dim=1)
    return (codes - 8) * scale + zero


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


def int4_mm(x: torch.Tensor, packed: torch.Tensor, group: int, scales_zeros: torch.Tensor) -> torch.Tensor:
    """x [M, K] bf16 contiguous -> [M, N] bf16."""
    return torch.ops.agent_runtime_cpu.int4_mm(x, packed, group, scales_zeros)


def int8_mm(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [M, K] bf16 contiguous, scale [N] bf16 -> [M, N] bf16."""
    return torch.ops.agent_runtime_cpu.int8_mm(x, packed, scale)
