"""Int8Embedding: a token embedding kept as int8 rows with one scale each, also used as a tied LM head."""

from __future__ import annotations

import torch
from torch import nn

from engine.quant import int8_codes
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
        codes, self.layout = int8_codes.store(gq.codes, dtype)  # engine/quant/int8_codes.py
        self.register_buffer("weight_int8", codes)
        self.register_buffer("scale", gq.scale[:, 0].to(dtype).contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return int8_codes.rows(self.weight_int8, self.layout, ids).to(self.dtype) * self.scale[ids, None]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or self.embedding_dim % 16 or (self.layout == "agent" and x.dtype != torch.bfloat16):
            return torch.nn.functional.linear(x, self.dequantize().to(x.dtype))
        scale = self.scale if self.scale.dtype == x.dtype else self.scale.to(x.dtype)
        return int8_codes.matmul(x, self.weight_int8, self.layout, scale)

    def weight_rows(self, index: torch.Tensor) -> torch.Tensor:
        """fp32 rows `index` of the weight (any index shape; a trailing hidden dimension is added)."""
        return int8_codes.rows(self.weight_int8, self.layout, index).float() * self.scale[index].float()[..., None]

    def dequantize(self) -> torch.Tensor:
        return int8_codes.dense(self.weight_int8, self.layout).float() * self.scale.float()[:, None]
