"""Writing a step's keys and values into the paged KV cache: a Triton kernel, its reference, a dispatch.

cache_k, cache_v [num_blocks, block_size, kv_heads, head_dim] (any strides); k, v [T, kv_heads,
head_dim] (any strides, e.g. slices of a fused qkv projection); slot_mapping [T] int64, the flat slot
block * block_size + offset of each token, where a slot < 0 skips the token (the padding rows of a
CUDA-graph batch) and leaves the cache untouched. The values are cast to the cache dtype; a
float8_e4m3fn cache stores clamp(k / k_scale, -448, 448) (v / v_scale likewise), rounded to nearest.

One launch writes K and V: one program per token over a [BLOCK_H, BLOCK_D] tile.

Triton's interpreter (TRITON_INTERPRET=1, the CPU tests) rounds fp32 -> float8 wrongly: its
conversion drops the carry when the mantissa rounds up (31.8 becomes 16.0, not 32.0). So the Triton
path refuses fp8 caches under the interpreter; there fp8 is tested through the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from agent_kernels.dispatch import interpreting, use_triton

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max


@triton.jit
def _store_token(src_ptr, stride_st, stride_sh, stride_sd,
                 cache_ptr, stride_cb, stride_co, stride_ch, stride_cd,
                 token, block, offset, scale, heads, cols, mask, IS_FP8: tl.constexpr):
    x = tl.load(src_ptr + token * stride_st + heads * stride_sh + cols * stride_sd, mask=mask, other=0.0)
    x = x.to(tl.float32)
    if IS_FP8:
        x = tl.minimum(tl.maximum(tl.div_rn(x, scale), -448.0), 448.0)
    dst = cache_ptr + block * stride_cb + offset * stride_co + heads * stride_ch + cols * stride_cd
    tl.store(dst, x.to(cache_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _write_kv_kernel(
    k_ptr, stride_kt, stride_kh, stride_kd,
    v_ptr, stride_vt, stride_vh, stride_vd,
    ck_ptr, stride_ckb, stride_cko, stride_ckh, stride_ckd,
    cv_ptr, stride_cvb, stride_cvo, stride_cvh, stride_cvd,
    slot_ptr, k_scale, v_scale,
    H, D, BLOCK_SIZE,
    IS_FP8: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    keep = slot >= 0
    slot = tl.where(keep, slot, 0)
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    heads = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < tl.where(keep, H, 0)) & (cols < D)  # a skipped token masks every head
    _store_token(k_ptr, stride_kt, stride_kh, stride_kd, ck_ptr, stride_ckb, stride_cko, stride_ckh, stride_ckd,
                 token, block, offset, k_scale, heads, cols, mask, IS_FP8)
    _store_token(v_ptr, stride_vt, stride_vh, stride_vd, cv_ptr, stride_cvb, stride_cvo, stride_cvh, stride_cvd,
                 token, block, offset, v_scale, heads, cols, mask, IS_FP8)


def _to_cache_dtype(x: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    if dtype == FP8:
        return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return x.to(dtype)


def reference_write_kv(cache_k: torch.Tensor, cache_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       slot_mapping: torch.Tensor, k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """Plain torch, the definition of correct: index_copy_ into the flat slots (the engine's write).

    Skipping negative slots selects rows by a mask, a data-dependent shape (a host sync on CUDA).
    The cache's (block, offset) dims must be viewable as one flat slot dim, as the engine allocates it.
    """
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    for cache, x, scale in ((cache_k, k, k_scale), (cache_v, v, v_scale)):
        heads, dim = cache.shape[-2:]
        flat = cache.view(-1, heads, dim)
        values = _to_cache_dtype(x[keep], cache.dtype, scale)
        if cache.dtype == FP8:  # CPU index_copy_ has no float8 kernel: copy the bytes
            flat, values = flat.view(torch.uint8), values.view(torch.uint8)
        flat.index_copy_(0, slots, values)


def triton_write_kv(cache_k: torch.Tensor, cache_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    slot_mapping: torch.Tensor, k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """The Triton kernel: same contract as reference_write_kv, K and V in one launch."""
    is_fp8 = cache_k.dtype == FP8
    if is_fp8 and interpreting():
        raise RuntimeError("the Triton KV-cache write cannot target a float8_e4m3fn cache under "
                           "TRITON_INTERPRET=1 (the interpreter rounds to float8 wrongly); "
                           "use reference_write_kv on CPU")
    tokens, heads, dim = k.shape
    block_h, block_d = triton.next_power_of_2(heads), triton.next_power_of_2(dim)
    if tokens > 0:
        _write_kv_kernel[(tokens,)](
            k, *k.stride(),
            v, *v.stride(),
            cache_k, *cache_k.stride(),
            cache_v, *cache_v.stride(),
            slot_mapping, float(k_scale), float(v_scale),
            heads, dim, cache_k.shape[1],
            IS_FP8=is_fp8, BLOCK_H=block_h, BLOCK_D=block_d,
            num_warps=min(max(block_h * block_d // 512, 1), 8),
        )


def write_kv(cache_k: torch.Tensor, cache_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor, k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """Store k, v [T, kv_heads, head_dim] in the cache slots of their tokens (slot < 0: skipped)."""
    if use_triton(k):
        triton_write_kv(cache_k, cache_v, k, v, slot_mapping, k_scale, v_scale)
    else:
        reference_write_kv(cache_k, cache_v, k, v, slot_mapping, k_scale, v_scale)
