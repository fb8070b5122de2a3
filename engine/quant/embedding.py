"""Int8Embedding: a token embedding kept as int8 rows with one scale each, also used as a tied LM head."""

from __future__ import annotations

import torch
from torch import nn

from engine.quant import int8_codes
from engine.quant.group_quant import GroupQuant


class Int8Embedding(nn.Module):
    """Rows dequantized on lookup; `project(x)` is x @ W.T on an int8 kernel (tied LM head)."""

    def __init__(self, gq: GroupQuant, dtype: torch.dtype, cpu: bool = True) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = gq.shape
        self.dtype = dtype
        weight = int8_codes.store(gq, dtype, cpu)  # engine/quant/int8_codes.py: the layout and its scales
        self.layout, self.group = weight.layout, weight.group
        self.register_buffer("weight_int8", weight.codes)
        self.register_buffer("scale", weight.scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight_rows(ids).to(self.dtype)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or self.embedding_dim % 16 or (self.layout == "agent" and x.dtype != torch.bfloat16):
            return torch.nn.functional.linear(x, self.dequantize().to(x.dtype))
        return int8_codes.matmul(x, self.weight_int8, self.scale, self.group, self.layout)

    def weight_rows(self, index: torch.Tensor) -> torch.Tensor:
        """fp32 rows `index` of the weight (any index shape; a trailing hidden dimension is added)."""
        return int8_codes.rows(self.weight_int8, self.scale, self.group, self.layout, index)

    def dequantize(self) -> torch.Tensor:
        return int8_codes.dense(self.weight_int8, self.scale, self.group, self.layout)
