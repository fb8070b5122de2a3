"""RMSNorm, optionally fused with the residual add before it: a Triton kernel, its reference, a dispatch.

Computes, per row of x [..., D] (leading dims flattened to T rows; any strides):

- Llama style: `weight * (x * rsqrt(mean(x^2) + eps)).to(dtype)` (cast first, multiply in the
  promoted dtype of weight and x), exactly engine/models/layers.py RMSNorm;
- Gemma style: `(x * rsqrt(mean(x^2) + eps) * (1 + weight)).to(dtype)` with everything in fp32.

With `residual`, the decoder's `x = x + residual` (in the input dtype) comes first: the call returns
`(normed, x + residual)`. The kernel runs one program per row over BLOCK_D = next_power_of_2(D)
columns and does its arithmetic in fp32, rounding where the reference rounds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from agent_kernels.dispatch import use_triton


@triton.jit
def _rms_norm_kernel(
    x_ptr, stride_xt, stride_xd,
    res_ptr, stride_rt, stride_rd,
    sum_ptr, stride_st, stride_sd,  # x + residual; its dtype is the normed input's (x itself without residual)
    w_ptr, stride_w,
    out_ptr, stride_ot, stride_od,
    D, eps,
    GEMMA: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    h = tl.load(x_ptr + row * stride_xt + cols * stride_xd, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * stride_rt + cols * stride_rd, mask=mask, other=0.0).to(tl.float32)
        # The decoder adds in the activations' dtype: round the sum there, store it, norm the rounded sum.
        s = (h + r).to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * stride_st + cols * stride_sd, s, mask=mask)
        h = s.to(tl.float32)
    h = h * tl.rsqrt(tl.sum(h * h, axis=0) / D + eps)
    w = tl.load(w_ptr + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    if GEMMA:
        out = h * (1.0 + w)
    else:
        out = w * h.to(sum_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * stride_ot + cols * stride_od, out.to(out_ptr.dtype.element_ty), mask=mask)


def _output_dtype(normed_dtype: torch.dtype, weight: torch.Tensor, gemma: bool) -> torch.dtype:
    return normed_dtype if gemma else torch.promote_types(weight.dtype, normed_dtype)


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gemma: bool = False,
                       residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Plain torch, the definition of correct (engine/models/layers.py RMSNorm, bit for bit)."""
    if residual is not None:
        x = x + residual
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    out = (h * (1.0 + weight.float())).to(dtype) if gemma else weight * h.to(dtype)
    return out if residual is None else (out, x)


def triton_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gemma: bool = False,
                    residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel: same contract as reference_rms_norm."""
    shape, dim = x.shape, x.shape[-1]
    x2 = x.reshape(-1, dim)
    if residual is None:
        res2 = sum2 = x2  # unused by the kernel; sum2's dtype names the normed input's dtype
    else:
        res2 = residual.reshape(-1, dim)
        sum2 = torch.empty(x2.shape, dtype=torch.promote_types(x.dtype, residual.dtype), device=x.device)
    out = torch.empty(x2.shape, dtype=_output_dtype(sum2.dtype, weight, gemma), device=x.device)
    block = triton.next_power_of_2(dim)
    if x2.shape[0] > 0:
        _rms_norm_kernel[(x2.shape[0],)](
            x2, x2.stride(0), x2.stride(1),
            res2, res2.stride(0), res2.stride(1),
            sum2, sum2.stride(0), sum2.stride(1),
            weight, weight.stride(0),
            out, out.stride(0), out.stride(1),
            dim, eps,
            GEMMA=gemma, HAS_RESIDUAL=residual is not None, BLOCK_D=block,
            num_warps=min(max(block // 256, 1), 16),
        )
    out = out.view(shape)
    return out if residual is None else (out, sum2.view(shape))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gemma: bool = False,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm of x [..., D] with weight [D]; with `residual`, returns (norm(x + residual), x + residual)."""
    if use_triton(x):
        return triton_rms_norm(x, weight, eps, gemma, residual)
    return reference_rms_norm(x, weight, eps, gemma, residual)
