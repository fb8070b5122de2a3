"""Weight-only int4 matmul for bf16 activations on AVX512-BF16 CPUs (cpu_int4_matmul.cpp).

`agent_runtime_cpu::int4_mm(x, packed, group, scales_zeros)` computes x W^T for W = (q - 8) * scale
+ zero per group of input columns (the convention and the scales_zeros tensor of PyTorch's
`aten._weight_int4pack_mm_for_cpu`), with the codes widened once per 16-column tile for up to 8 rows
and multiplied on vdpbf16ps: 2.6x PyTorch's kernel at 8 rows, where that one is bound by its fp32
FMAs. `pack` lays codes out for it; `unpack` inverts `pack`; `reference_int4_mm` is the definition
of correct (dequantize to fp32, matmul). `enabled()` says whether to use it: the extension built,
the CPU has AVX512-BF16, and AGENT_RUNTIME_CPU_INT4 is not "torch".
"""

from __future__ import annotations

import os

import torch

from agent_kernels import cpu_extension

__all__ = ["enabled", "int4_mm", "pack", "reference_int4_mm", "unpack"]


def enabled() -> bool:
    """Whether int4 CPU weights should be packed for this kernel (builds the extension the first time)."""
    if os.environ.get("AGENT_RUNTIME_CPU_INT4", "").lower() == "torch":
        return False
    return cpu_extension.load() and bool(torch.ops.agent_runtime_cpu.int4_supported())


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Codes [N, K] (0..15; N % 16 == 0, K % 4 == 0) -> uint8 [N // 16, K // 4, 32] (cpu_int4_matmul.cpp)."""
    n, k = codes.shape
    if n % 16 or k % 4:
        raise ValueError(f"int4 pack needs out_features % 16 == 0 and in_features % 4 == 0, got {n} x {k}")
    q = codes.to(torch.uint8).view(n // 16, 16, k // 4, 2, 2)  # [tile, column, quad, nibble, j]
    q = q.permute(0, 2, 3, 1, 4)  # [tile, quad, nibble, column, j]
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n // 16, k // 4, 32).contiguous()


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """The codes [N, K] (uint8) that `pack` laid out."""
    tiles, quads, _ = packed.shape
    b = packed.view(tiles, quads, 1, 16, 2)
    q = torch.cat([b & 0x0F, b >> 4], dim=2)  # [tile, quad, nibble, column, j]
    return q.permute(0, 3, 1, 2, 4).reshape(tiles * 16, quads * 4).contiguous()


def dequantize(packed: torch.Tensor, scales_zeros: torch.Tensor, group: int) -> torch.Tensor:
    """The fp32 weight [N, K] the kernel multiplies by."""
    codes = unpack(packed).float()
    scale = scales_zeros[..., 0].float().t().repeat_interleave(group, dim=1)  # [N, K]
    zero = scales_zeros[..., 1].float().t().repeat_interleave(group, dim=1)
    return (codes - 8) * scale + zero


def int4_mm(x: torch.Tensor, packed: torch.Tensor, group: int, scales_zeros: torch.Tensor) -> torch.Tensor:
    """x [M, K] bf16 contiguous -> [M, N] bf16."""
    return torch.ops.agent_runtime_cpu.int4_mm(x, packed, group, scales_zeros)


def reference_int4_mm(x: torch.Tensor, packed: torch.Tensor, group: int, scales_zeros: torch.Tensor) -> torch.Tensor:
    """fp32 dequantize-then-matmul, rounded to x's dtype."""
    return (x.float() @ dequantize(packed, scales_zeros, group).t()).to(x.dtype)
