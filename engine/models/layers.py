"""Building blocks of the native decoder: norms, rotary tables, activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agent_kernels.dispatch import use_triton
from engine.models.spec import RopeSpec

# Triton kernel modules are imported where used (they import triton, which CPU engines never need).


class RMSNorm(nn.Module):
    """RMSNorm in both conventions: Llama (w * x_norm, cast first) and Gemma ((1 + w) * x_norm in fp32)."""

    def __init__(self, dim: int, eps: float, style: str = "llama") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.eps = eps
        self.gemma = style == "gemma"

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """norm(x); with `residual`, (norm(x + residual), x + residual): the residual add fused in (one
        Triton kernel on GPU)."""
        if use_triton(x):
            from agent_kernels.rms_norm import triton_rms_norm

            return triton_rms_norm(x, self.weight, self.eps, self.gemma, residual)
        if residual is not None:
            x = residual + x
            return self._norm(x), x
        return self._norm(x)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.gemma:
            # Gemma multiplies in fp32 and casts last; Llama casts first (matches HF bit for bit).
            return (h * (1.0 + self.weight.float())).to(dtype)
        return self.weight * h.to(dtype)


class RotaryTable(nn.Module):
    """Precomputed cos/sin for every position, indexed by the positions of a batch."""

    def __init__(self, rope: RopeSpec, max_positions: int) -> None:
        super().__init__()
        self.rope = rope
        self.max_positions = max_positions
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)

    def build(self, device: torch.device, dtype: torch.dtype) -> None:
        """Fill the tables (after the module leaves the meta device)."""
        inv_freq = torch.tensor(self.rope.inv_freq, dtype=torch.float32, device=device)
        positions = torch.arange(self.max_positions, device=device, dtype=torch.int64).float()
        # Elementwise, exactly as HF computes it, so the tables match bit for bit.
        freqs = positions[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * self.rope.attention_scaling).to(dtype)
        sin = (emb.sin() * self.rope.attention_scaling).to(dtype)
        # Sign of rotate_half folded into the table: x*cos + roll(x, half)*sin_signed is exactly
        # HF's x*cos + cat(-x2, x1)*sin, with one op fewer per call.
        half = sin.shape[-1] // 2
        self.sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[positions], self.sin[positions]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, heads, head_dim] by the per-token cos/sin [T, head_dim] (half-split layout;
    `sin` carries rotate_half's sign, see RotaryTable.build)."""
    if use_triton(x):  # the per-token rows are the kernel's tables, row t for token t
        from agent_kernels import rotary

        return rotary.triton_apply_rotary(x, torch.arange(x.shape[0], device=x.device), cos, sin)
    return x * cos[:, None, :] + x.roll(x.shape[-1] // 2, dims=-1) * sin[:, None, :]


def fused_activation(name: str) -> str:
    """The agent_kernels/act_and_mul.py name of a HF activation."""
    return "silu" if name in ("silu", "swish") else "gelu_tanh" if name in _GELU_TANH else ""


_GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh", "gelu_new")


def activation(name: str):
    """The MLP activation named by a HF config."""
    if name in ("silu", "swish"):
        return F.silu
    if name in _GELU_TANH:
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu
    raise ValueError(f"unsupported activation {name!r}: expected silu, gelu or gelu_pytorch_tanh")
