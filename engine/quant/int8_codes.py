"""Where an int8 weight's codes live: PyTorch's [N, K] layout or cpu_quant_matmul's tiles.

Int8Linear and Int8Embedding (a tied LM head) keep one codes tensor in one of two layouts:
"agent" (`cpu_quant_matmul.pack_int8`, for its AVX512-BF16 kernel: bf16 activations, N % 16 == 0,
K % 16 == 0) or "aten" ([N, K], for `aten._weight_int8pack_mm`). These functions hide which.
"""

from __future__ import annotations

import torch

from agent_kernels import cpu_quant_matmul


def store(codes: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, str]:
    """(codes tensor, layout) for int8 codes [N, K] computing with `dtype` activations."""
    n, k = codes.shape
    if dtype == torch.bfloat16 and n % 16 == 0 and k % 16 == 0 and cpu_quant_matmul.enabled():
        return cpu_quant_matmul.pack_int8(codes), "agent"
    return codes.contiguous(), "aten"


def rows(codes: torch.Tensor, layout: str, index: torch.Tensor) -> torch.Tensor:
    """int8 rows `index` (any shape): index.shape + [K]."""
    return cpu_quant_matmul.int8_rows(codes, index) if layout == "agent" else codes[index]


def dense(codes: torch.Tensor, layout: str) -> torch.Tensor:
    """All codes as [N, K]."""
    return cpu_quant_matmul.unpack_int8(codes) if layout == "agent" else codes


def matmul(x: torch.Tensor, codes: torch.Tensor, layout: str, scale: torch.Tensor) -> torch.Tensor:
    """(x q^T) * scale for x [M, K] on the CPU kernel of this layout (bf16 out for bf16 x)."""
    if layout == "agent":
        return cpu_quant_matmul.int8_mm(x.contiguous(), codes, scale)
    return torch.ops.aten._weight_int8pack_mm(x.contiguous(), codes, scale)
