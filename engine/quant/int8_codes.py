"""An int8 weight's codes and scales in one of two layouts, for Int8Linear and Int8Embedding.

- "agent" (CPUs with AVX512-BF16, bf16 activations, N % 16 == 0 and K % 16 == 0): codes packed by
  `cpu_quant_matmul.pack_int8` and f32 scales [K / group, N] for its kernel. A GGUF Q8_0 weight keeps
  its own scale per 32 columns (exactly the file's weight); other weights are requantized with one
  scale per row (group = K).
- "aten": codes [N, K] and one scale per row [N] in the activation dtype, for
  `aten._weight_int8pack_mm` (always requantized per row).

These functions hide which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agent_kernels import cpu_quant_matmul
from engine.quant.group_quant import GroupQuant
from engine.quant.isq import quantize_int8


@dataclass(frozen=True)
class Int8Weight:
    codes: torch.Tensor
    scale: torch.Tensor
    group: int  # input columns per scale (K: one scale per row)
    layout: str  # "agent" or "aten"


def store(gq: GroupQuant, dtype: torch.dtype, cpu: bool = True) -> Int8Weight:
    """The int8 weight to keep for `gq`, computing with `dtype` activations (on the CPU unless `cpu` is False)."""
    n, k = gq.shape
    if cpu and dtype == torch.bfloat16 and n % 16 == 0 and k % 16 == 0 and cpu_quant_matmul.enabled():
        if not (gq.symmetric_int8 and gq.group % 2 == 0):
            gq = quantize_int8(gq)
        return Int8Weight(cpu_quant_matmul.pack_int8(gq.codes), gq.scale.t().float().contiguous(), gq.group, "agent")
    if not (gq.symmetric_int8 and gq.group == k):
        gq = quantize_int8(gq)
    return Int8Weight(gq.codes.contiguous(), gq.scale[:, 0].to(dtype).contiguous(), k, "aten")


def rows(codes: torch.Tensor, scale: torch.Tensor, group: int, layout: str, index: torch.Tensor) -> torch.Tensor:
    """fp32 weight rows `index` (any shape): index.shape + [K]."""
    if layout == "aten":
        return codes[index].float() * scale[index].float()[..., None]
    q = cpu_quant_matmul.int8_rows(codes, index).float()
    k = q.shape[-1]
    scales = scale.t()[index]  # index.shape + [K / group]
    return (q.view(*index.shape, k // group, group) * scales[..., None]).view(*index.shape, k)


def dense(codes: torch.Tensor, scale: torch.Tensor, group: int, layout: str) -> torch.Tensor:
    """The whole fp32 weight [N, K]."""
    if layout == "aten":
        return codes.float() * scale.float()[:, None]
    q = cpu_quant_matmul.unpack_int8(codes).float()
    n, k = q.shape
    return (q.view(n, k // group, group) * scale.t()[:, :, None]).view(n, k)


def matmul(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, group: int, layout: str) -> torch.Tensor:
    """x W^T for x [M, K] on this layout's CPU kernel (bf16 activations for "agent")."""
    if layout == "agent":
        return cpu_quant_matmul.int8_mm(x.contiguous(), codes, group, scale)
    scale = scale if scale.dtype == x.dtype else scale.to(x.dtype)
    return torch.ops.aten._weight_int8pack_mm(x.contiguous(), codes, scale)
