"""Gated MLP activation: a Triton kernel, its reference, a dispatch.

For x [..., 2I] (the fused gate/up projection: gate = x[..., :I], up = x[..., I:]; leading dims
flattened to T rows, any strides), computes the new contiguous [..., I]

    act(gate) * up,   act = silu (x * sigmoid(x)) or gelu_tanh (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))).

The kernel runs a 2D grid (row, column block of BLOCK_I) in fp32 and rounds once at the store;
gelu_tanh uses the identity 0.5 (1 + tanh(z)) = sigmoid(2z), so both need only a sigmoid, computed from
exp(-|z|) so that it cannot overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from agent_kernels.dispatch import use_triton

ACTIVATIONS = ("silu", "gelu_tanh")
_SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)


@triton.jit
def _act_and_mul_kernel(
    x_ptr, stride_xt, stride_xi,
    out_ptr, stride_ot, stride_oi,
    inter,
    GELU_TANH: tl.constexpr, BLOCK_I: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask = cols < inter
    gate = tl.load(x_ptr + row * stride_xt + cols * stride_xi, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_xt + (cols + inter) * stride_xi, mask=mask, other=0.0).to(tl.float32)
    if GELU_TANH:
        z = 2.0 * _SQRT_2_OVER_PI * (gate + 0.044715 * gate * gate * gate)
    else:
        z = gate
    # sigmoid(z) from exp(-|z|) <= 1: no overflow to inf for large |z|.
    e = tl.exp(-tl.abs(z))
    act = gate * tl.where(z >= 0, 1.0, e) / (1.0 + e)
    tl.store(out_ptr + row * stride_ot + cols * stride_oi, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def _check(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {activation!r}: expected one of {ACTIVATIONS}")


def reference_act_and_mul(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Plain torch, the definition of correct (in x's dtype, as the engine's MLP computes it)."""
    _check(activation)
    gate, up = x.chunk(2, dim=-1)
    if activation == "silu":
        return F.silu(gate) * up
    return F.gelu(gate, approximate="tanh") * up


def triton_act_and_mul(x: torch.Tensor, activation: str) -> torch.Tensor:
    """The Triton kernel: same contract as reference_act_and_mul."""
    _check(activation)
    inter = x.shape[-1] // 2
    x2 = x.reshape(-1, x.shape[-1])
    out = torch.empty((x2.shape[0], inter), dtype=x.dtype, device=x.device)
    block = min(triton.next_power_of_2(inter), 1024)
    if x2.shape[0] > 0 and inter > 0:
        _act_and_mul_kernel[(x2.shape[0], triton.cdiv(inter, block))](
            x2, x2.stride(0), x2.stride(1),
            out, out.stride(0), out.stride(1),
            inter,
            GELU_TANH=activation == "gelu_tanh", BLOCK_I=block,
            num_warps=min(max(block // 256, 1), 4),
        )
    return out.view(*x.shape[:-1], inter)


def act_and_mul(x: torch.Tensor, activation: str) -> torch.Tensor:
    """act(x[..., :I]) * x[..., I:] for x [..., 2I]; activation "silu" or "gelu_tanh"."""
    if use_triton(x):
        return triton_act_and_mul(x, activation)
    return reference_act_and_mul(x, activation)
