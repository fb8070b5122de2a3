"""Int8Embedding: a token embedding kept as int8 rows with one scale each, also used as a tied LM head."""

from __future__ import annotations

import torch
from torch import nn

from engine.quant.group_quant import GroupQuant
from engine.quant.isq import quantize_int8


class Int8Embedding(nn.Module):
    """Rows dequantized on lookup; `project(x)` is x @ W.T on the int8 kernel (tied LM head)."""

    def __init__(self, gq: GroupQuant, dtype: torch.dtype) -> None:
        super().__init__()
        if not (gq.bits == 8 and not gq.unsigned and gq.offset is None and gq.group == gq.shape[1]):
            gq = quantize_int8(gq)
        self.num_embeddings, self.embedding_dim = gq.shape
        self.dtype = dtype
        self.register_buffer("weight_int8", gq.codes.contiguous())
        self.register_buffer("scale", gq.scale[:, 0].to(dtype).contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight_int8[ids].to(self.dtype) * self.scale[ids, None]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or self.embedding_dim % 16:
            return torch.nn.functional.linear(x, self.dequantize().to(x.dtype))
        scale = self.scale if self.scale.dtype == x.dtype else self.scale.to(x.dtype)
        return torch.ops.aten._weight_int8pack_mm(x.contiguous(), self.weight_int8, scale)

    def weight_rows(self, index: torch.Tensor) -> torch.Tensor:
        """fp32 rows `index` of the weight (any index shape; a trailing hidden dimension is added)."""
        return self.weight_int8[index].float() * self.scale[index].float()[..., None]

    def dequantize(self) -> torch.Tensor:
        return self.weight_int8.float() * self.scale.float()[:, None]
