"""Rotary position embedding (half-split layout): a Triton kernel, its reference, a dispatch.

For x [T, H, D] (any strides, e.g. the q or k slice of a fused qkv projection), positions [T] and
the tables cos/sin [max_positions, D] of engine/models/layers.py RotaryTable (sin already carries
rotate_half's sign, tables in x's dtype), computes the new contiguous [T, H, D]

    out = x * cos[pos] + roll(x, D // 2) * sin[pos]

i.e. out[:half] = x1 * cos[:half] + x2 * sin[:half] and out[half:] = x2 * cos[half:] + x1 * sin[half:].
The kernel runs one program per token over a [BLOCK_H, BLOCK_HALF] tile (powers of two, masked, so
any head count and any even D work), in fp32, rounding once at the store; the reference rounds after
every op in x's dtype, so the two agree to a rounding or two of x's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from agent_kernels.dispatch import use_triton


@triton.jit
def _rotary_kernel(
    x_ptr, stride_xt, stride_xh, stride_xd,
    pos_ptr,
    cos_ptr, stride_cp, stride_cd,
    sin_ptr, stride_sp, stride_sd,
    out_ptr, stride_ot, stride_oh, stride_od,
    H, HALF,
    BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    heads = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_HALF)[None, :]
    col_mask = cols < HALF
    mask = (heads < H) & col_mask

    cos1 = tl.load(cos_ptr + pos * stride_cp + cols * stride_cd, mask=col_mask, other=0.0).to(tl.float32)
    cos2 = tl.load(cos_ptr + pos * stride_cp + (cols + HALF) * stride_cd, mask=col_mask, other=0.0).to(tl.float32)
    sin1 = tl.load(sin_ptr + pos * stride_sp + cols * stride_sd, mask=col_mask, other=0.0).to(tl.float32)
    sin2 = tl.load(sin_ptr + pos * stride_sp + (cols + HALF) * stride_sd, mask=col_mask, other=0.0).to(tl.float32)

    x_row = x_ptr + token * stride_xt + heads * stride_xh
    x1 = tl.load(x_row + cols * stride_xd, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_row + (cols + HALF) * stride_xd, mask=mask, other=0.0).to(tl.float32)

    out_row = out_ptr + token * stride_ot + heads * stride_oh
    out_ty = out_ptr.dtype.element_ty
    tl.store(out_row + cols * stride_od, (x1 * cos1 + x2 * sin1).to(out_ty), mask=mask)
    tl.store(out_row + (cols + HALF) * stride_od, (x2 * cos2 + x1 * sin2).to(out_ty), mask=mask)


def reference_apply_rotary(x: torch.Tensor, positions: torch.Tensor, cos_table: torch.Tensor,
                           sin_table: torch.Tensor) -> torch.Tensor:
    """Plain torch, the definition of correct: exactly what the engine computes (in x's dtype)."""
    cos = cos_table[positions][:, None, :]
    sin = sin_table[positions][:, None, :]
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


def triton_apply_rotary(x: torch.Tensor, positions: torch.Tensor, cos_table: torch.Tensor,
                        sin_table: torch.Tensor) -> torch.Tensor:
    """The Triton kernel: same contract as reference_apply_rotary."""
    tokens, heads, dim = x.shape
    half = dim // 2
    out = torch.empty((tokens, heads, dim), dtype=x.dtype, device=x.device)
    block_h, block_half = triton.next_power_of_2(heads), triton.next_power_of_2(half)
    if tokens > 0:
        _rotary_kernel[(tokens,)](
            x, x.stride(0), x.stride(1), x.stride(2),
            positions,
            cos_table, cos_table.stride(0), cos_table.stride(1),
            sin_table, sin_table.stride(0), sin_table.stride(1),
            out, out.stride(0), out.stride(1), out.stride(2),
            heads, half,
            BLOCK_H=block_h, BLOCK_HALF=block_half,
            num_warps=min(max(block_h * block_half // 512, 1), 8),
        )
    return out


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, cos_table: torch.Tensor,
                 sin_table: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, H, D] by the table rows of positions [T]: a new contiguous [T, H, D] in x's dtype."""
    if use_triton(x):
        return triton_apply_rotary(x, positions, cos_table, sin_table)
    return reference_apply_rotary(x, positions, cos_table, sin_table)
