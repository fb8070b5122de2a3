"""Triton helpers the two paged-attention kernels share: a tile of keys and values read through the
block table, a tile's (soft-capped) scores, and tanh. (No kernel of its own; its references are the
kernels'.)"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_kv_tile(k_ptr, v_ptr, table, pos, ok, dims, dim_ok, kv_head,
                 stride_kb, stride_kp, stride_kh, stride_vb, stride_vp, stride_vh, BLOCK_SIZE: tl.constexpr):
    """Keys and values [BLOCK_N, BLOCK_D] of KV head `kv_head` at positions `pos` (rows where `ok`;
    others read as 0): position p lives at block table[p // BLOCK_SIZE], slot p % BLOCK_SIZE."""
    block = tl.load(table + pos // BLOCK_SIZE, mask=ok, other=0).to(tl.int64)
    slot = pos % BLOCK_SIZE
    kv_mask = ok[:, None] & dim_ok[None, :]
    k = tl.load(k_ptr + block[:, None] * stride_kb + slot[:, None] * stride_kp + kv_head * stride_kh
                + dims[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + block[:, None] * stride_vb + slot[:, None] * stride_vp + kv_head * stride_vh
                + dims[None, :], mask=kv_mask, other=0.0)
    return k, v


@triton.jit
def tile_scores(q, k, qk_scale, softcap, USE_SOFTCAP: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Scaled (and soft-capped) scores [rows, BLOCK_N] of queries q against a tile of keys k."""
    scores = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=DOT_PRECISION) * qk_scale
    if USE_SOFTCAP:
        scores = softcap * tanh(scores / softcap)
    return scores


@triton.jit
def tanh(x):
    """tanh from exp (tl has no tanh off CUDA's libdevice): exact to fp32 rounding, saturates at +-1."""
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)
