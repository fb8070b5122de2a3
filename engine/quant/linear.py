"""Quantized linear layers on weight-only CPU kernels (ours or PyTorch's), each with its dense reference.

- `Int4Linear`: 4-bit codes in groups of 32-256 input columns. With bf16 activations on a CPU with
  AVX512-BF16 (`layout` "agent"): our kernel (agent_kernels/cpu_quant_matmul.py, ~2x PyTorch's at
  1-512 rows), w = q * scale + offset with both in f16 (GGUF Q4_0/Q4_1's own values, exactly).
  Otherwise ("aten"): `aten._weight_int4pack_mm_for_cpu`, w = (q - 8) * scale + zero with
  zero = offset + 8 * scale, both in the activation dtype.
- `Int8Linear`: 8-bit codes on our int8 kernel (f32 scales per group: Q8_0's own) or
  `aten._weight_int8pack_mm` (one scale per row in the activation dtype); engine/quant/int8_codes.py
  holds the choice.

PyTorch's kernels want bf16 activations to be fast (int8 with fp32 activations takes an ~8x slower
path); ours take bf16 only. Shapes a kernel rejects (the int4 packers need out_features % 16 == 0;
PyTorch's int8 kernel returns garbage unless in_features % 16 == 0) and devices without the kernel
run `reference`: dequantize, then a dense matmul. `dequantize()` is
the weight the module computes with, for tests and for the reference path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agent_kernels import cpu_quant_matmul
from engine.quant import int8_codes
from engine.quant.group_quant import GroupQuant

INT4_GROUPS = (32, 64, 128, 256)


def int4_supported(gq: GroupQuant) -> bool:
    """Whether the int4 CPU kernel can take this weight as it is (no requantization)."""
    rows, _ = gq.shape
    return gq.bits == 4 and gq.unsigned and gq.offset is not None and gq.group in INT4_GROUPS and rows % 16 == 0


def _kernel_ok(x: torch.Tensor) -> bool:
    return x.device.type == "cpu"


class QuantLinear(nn.Module):
    """Shared surface: in/out features, optional dense bias, dense reference path."""

    in_features: int
    out_features: int

    def __init__(self, out_features: int, in_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.use_kernel = True

    def dequantize(self) -> torch.Tensor:
        raise NotImplementedError

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Dequantize-then-matmul in the activation dtype (the definition of correct)."""
        return F.linear(x, self.dequantize().to(x.dtype), self.bias)

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = out.view(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4Linear(QuantLinear):
    def __init__(self, gq: GroupQuant, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        if not int4_supported(gq):
            raise ValueError(f"weight {gq.shape} (group {gq.group}, {gq.bits}-bit) does not fit the int4 kernel")
        super().__init__(*gq.shape, bias)
        self.group = gq.group
        # "agent": cpu_quant_matmul's layout and kernel (bf16 activations; the scales and offsets in f16,
        # exact for GGUF Q4_0 / Q4_1); "aten": PyTorch's (f32 activations, CPUs without AVX512-BF16).
        self.layout = "aten"
        if dtype == torch.bfloat16 and cpu_quant_matmul.enabled():
            scales_offsets = cpu_quant_matmul.scales_offsets(gq.scale, gq.offset)
            if scales_offsets is not None:
                self.layout = "agent"
                self.register_buffer("packed", cpu_quant_matmul.pack_int4(gq.codes))
                self.register_buffer("scales_offsets", scales_offsets)  # [I // group, 2, O] f16
                return
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(gq.codes.to(torch.int32), 1)
        zero = gq.offset + 8 * gq.scale
        scales_zeros = torch.stack([gq.scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_zeros", scales_zeros)  # [I // group, O, 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.use_kernel and _kernel_ok(x)) or (self.layout == "agent" and x.dtype != torch.bfloat16):
            return self.reference(x)
        flat = x.reshape(-1, self.in_features).contiguous()  # the int4 kernel refuses strided activations
        if self.layout == "agent":
            return self._finish(cpu_quant_matmul.int4_mm(flat, self.packed, self.group, self.scales_offsets), x)
        sz = self.scales_zeros if self.scales_zeros.dtype == x.dtype else self.scales_zeros.to(x.dtype)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, sz)
        return self._finish(out, x)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [O, I] (PyTorch's layout: its kernel applied to the identity, exact)."""
        if self.layout == "agent":
            return cpu_quant_matmul.dequantize_int4(self.packed.cpu(), self.scales_offsets.cpu(), self.group)
        eye = torch.eye(self.in_features, dtype=torch.float32)
        sz = self.scales_zeros.float()
        return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed.cpu(), self.group, sz.cpu()).t().contiguous()


class Int8Linear(QuantLinear):
    def __init__(self, gq: GroupQuant, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__(*gq.shape, bias)
        weight = int8_codes.store(gq, dtype)  # engine/quant/int8_codes.py: the layout and its scales
        self.layout, self.group = weight.layout, weight.group
        self.register_buffer("weight_int8", weight.codes)
        self.register_buffer("scale", weight.scale)
        self.kernel_shape_ok = self.in_features % 16 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.use_kernel and self.kernel_shape_ok and _kernel_ok(x)) or (
                self.layout == "agent" and x.dtype != torch.bfloat16):
            return self.reference(x)
        flat = x.reshape(-1, self.in_features)
        return self._finish(int8_codes.matmul(flat, self.weight_int8, self.scale, self.group, self.layout), x)

    def dequantize(self) -> torch.Tensor:
        return int8_codes.dense(self.weight_int8, self.scale, self.group, self.layout)

    def weight_rows(self, index: torch.Tensor) -> torch.Tensor:
        """fp32 rows `index` of the weight (any index shape; a trailing in_features dimension is added)."""
        return int8_codes.rows(self.weight_int8, self.scale, self.group, self.layout, index)


def build_linear(gq: GroupQuant, bias: torch.Tensor | None, dtype: torch.dtype, prefer_int4: bool) -> QuantLinear:
    """Int4Linear when asked for and the weight fits the kernel as it is, else Int8Linear."""
    if prefer_int4 and int4_supported(gq):
        return Int4Linear(gq, bias, dtype)
    return Int8Linear(gq, bias, dtype)
