"""Quantized linear layers for CUDA on the Triton kernels of agent_kernels/, each with its dense reference.

- `TritonInt8Linear`: int8 codes [O, I] with one scale per output row (agent_kernels/scaled_matmul.py).
- `TritonFp8Linear`: float8_e4m3fn codes [O, I] with one scale per output row (same kernel).
- `TritonInt4Linear`: 4-bit codes packed two to a byte [O, I // 2], with a scale and an offset per
  group of input columns (agent_kernels/int4_matmul.py).

Scales (and int4 offsets) are kept in the activation dtype, as the CPU modules of
engine/quant/linear.py keep theirs. Off CUDA (agent_kernels.dispatch.use_triton) and with
`use_kernel = False` they run `reference` (dequantize, then matmul), so they also compute, slowly,
on the CPU. `dequantize()` is the fp32 weight the module
computes with.
"""

from __future__ import annotations

import torch

from agent_kernels.dispatch import use_triton
from engine.quant.group_quant import GroupQuant
from engine.quant.isq import quantize_fp8, quantize_int8
from engine.quant.linear import QuantLinear

# The kernel modules import triton (~90 MB resident): loaded on first use, never on a CPU-only path.

GPU_MODES = ("int8", "int4", "fp8")


def _per_row(gq: GroupQuant, dtype: torch.dtype) -> bool:
    """Whether `gq` is 8-bit, symmetric, one scale per row, with codes of `dtype`."""
    return gq.bits == 8 and gq.codes.dtype == dtype and gq.offset is None and gq.group == gq.shape[1]


def int4_fits(gq: GroupQuant) -> bool:
    """Whether the int4 kernel takes this weight as it is: unsigned 4-bit codes, an even in_features
    (the group divides in_features by GroupQuant's own rule)."""
    return gq.bits == 4 and gq.unsigned and gq.shape[1] % 2 == 0


class _RowScaled(QuantLinear):
    """Codes [O, I] and a scale [O] per output row, multiplied by agent_kernels.scaled_matmul."""

    def __init__(self, gq: GroupQuant, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__(*gq.shape, bias)
        self.register_buffer("codes", gq.codes.contiguous())
        self.register_buffer("scale", gq.scale[:, 0].to(dtype).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.use_kernel and use_triton(x)):
            return self.reference(x)
        from agent_kernels.scaled_matmul import scaled_matmul

        flat = x.reshape(-1, self.in_features)
        bias = self.bias if self.bias is None or self.bias.dtype == x.dtype else self.bias.to(x.dtype)
        out = scaled_matmul(flat, self.codes, self.scale, bias)
        return out.view(*x.shape[:-1], self.out_features)

    def dequantize(self) -> torch.Tensor:
        return self.codes.float() * self.scale.float()[:, None]

    def weight_rows(self, index: torch.Tensor) -> torch.Tensor:
        """fp32 rows `index` of the weight (any index shape; a trailing in_features dimension is added)."""
        return self.codes[index].float() * self.scale[index].float()[..., None]


class TritonInt8Linear(_RowScaled):
    """int8 per-row weights; any other GroupQuant is requantized to that first (as Int8Linear does)."""

    def __init__(self, gq: GroupQuant, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__(gq if _per_row(gq, torch.int8) else quantize_int8(gq), bias, dtype)


class TritonFp8Linear(_RowScaled):
    """float8_e4m3fn per-row weights; any other GroupQuant is requantized from its dequantized weight."""

    def __init__(self, gq: GroupQuant, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__(gq if _per_row(gq, torch.float8_e4m3fn) else quantize_fp8(gq), bias, dtype)


class TritonInt4Linear(QuantLinear):
    """4-bit group-wise weights (an offset of None is stored as zeros)."""

    def __init__(self, gq: GroupQuant, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        if not int4_fits(gq):
            raise ValueError(f"weight {gq.shape} ({gq.bits}-bit {gq.codes.dtype} codes) does not fit the int4 "
                             "kernel (want unsigned 4-bit codes and an even in_features)")
        super().__init__(*gq.shape, bias)
        self.group = gq.group
        from agent_kernels.int4_matmul import pack_int4

        offset = torch.zeros_like(gq.scale) if gq.offset is None else gq.offset
        self.register_buffer("packed", pack_int4(gq.codes))
        self.register_buffer("scale", gq.scale.to(dtype).contiguous())
        self.register_buffer("offset", offset.to(dtype).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.use_kernel and use_triton(x)):
            return self.reference(x)
        from agent_kernels.int4_matmul import int4_matmul

        out = int4_matmul(x.reshape(-1, self.in_features), self.packed, self.scale, self.offset, self.group)
        return self._finish(out, x)

    def dequantize(self) -> torch.Tensor:
        from agent_kernels.int4_matmul import dequantize_int4

        return dequantize_int4(self.packed, self.scale, self.offset, self.group)


def build_gpu_linear(gq: GroupQuant, bias: torch.Tensor | None, dtype: torch.dtype, mode: str) -> QuantLinear:
    """The Triton module for `mode` ("int8", "int4" or "fp8").

    "int4" takes the weight as it is when `int4_fits` (4-bit unsigned codes, even in_features);
    any other weight falls back to int8 per-row, as engine.quant.linear.build_linear does on CPU.
    "int8" and "fp8" requantize a weight that is not already in their format.
    """
    if mode == "int4":
        return TritonInt4Linear(gq, bias, dtype) if int4_fits(gq) else TritonInt8Linear(gq, bias, dtype)
    if mode == "int8":
        return TritonInt8Linear(gq, bias, dtype)
    if mode == "fp8":
        return TritonFp8Linear(gq, bias, dtype)
    raise ValueError(f"invalid GPU quantization mode {mode!r}: expected one of {GPU_MODES}")
