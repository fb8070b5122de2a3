"""A whole decode step's decoder layers as one C++ call (cpu_decode_step.cpp), for the CPU.

The op `agent_runtime_cpu::decode_layers` runs every layer of a Llama-style decoder for a decode
batch: RMSNorm, fused QKV, rotary, the KV write, paged attention (cpu_decode_attention.cpp), o_proj,
residual + RMSNorm, gate/up, SiLU x up, down, residual; its matmuls are the kernels the eager
Int4Linear / Int8Linear call (cpu_quant_matmul.cpp's or PyTorch's packed int4 and int8). Its
definition of correct is the eager model (engine/models/decoder.py), which engine/native_decode.py
checks a model against before flattening its weights for this call.
"""

from __future__ import annotations

import torch

from agent_kernels.cpu_extension import available, load

__all__ = ["INT4", "INT4_AGENT", "INT8", "INT8_AGENT", "available", "decode_layers", "load"]

# Linear kinds, as the C++ code numbers them: PyTorch's packed int4 and int8, then
# cpu_quant_matmul's int4 and int8.
INT4, INT8, INT4_AGENT, INT8_AGENT = 0, 1, 2, 3


def decode_layers(x: torch.Tensor, norms: list[torch.Tensor], kinds: list[int], groups: list[int],
                  weights: list[torch.Tensor], scales: list[torch.Tensor], biases: list[torch.Tensor],
                  windows: list[int], cos: torch.Tensor, sin: torch.Tensor, keys: list[torch.Tensor],
                  values: list[torch.Tensor], slots: torch.Tensor, block_table: torch.Tensor,
                  seq_lens: torch.Tensor, heads: int, kv_heads: int, head_dim: int, eps: float,
                  scale: float) -> torch.Tensor:
    """Hidden states [B, hidden] (bf16) after every layer; writes each layer's new keys/values."""
    return torch.ops.agent_runtime_cpu.decode_layers(x, norms, kinds, groups, weights, scales, biases, windows, cos,
                                                     sin, keys, values, slots, block_table, seq_lens, heads,
                                                     kv_heads, head_dim, eps, scale)
