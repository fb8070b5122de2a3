"""Paged prefill attention: a varlen batch of query chunks over the paged KV cache, Triton + reference.

Layout. q [T, H, D] flattens the batch's chunks: sequence b's queries are q[query_start[b] :
query_start[b + 1]] at positions context_lens[b] + i; every key they see (the cached prefix and the
chunk itself, already written) is read from cache_k, cache_v [num_blocks, block_size, kv_heads, D]
through block_table[b] (position p at block block_table[b, p // block_size], offset p % block_size).
Caches are fp32, fp16, bf16, or float8_e4m3fn with per-tensor dequant scales k_scale, v_scale
(real = stored * scale). H = kv_heads * groups (GQA). The output [T, H, D] has q's dtype.

Semantics. Causal: the query at position t sees keys 0..t, and with a sliding window w only those
> t - w. scores = q . k * scale, soft-capped by c as tanh(scores / c) * c, softmax in fp32.

Algorithm. Grid (sequence, query tile, KV head): a program's BLOCK_M rows are BLOCK_M // groups
consecutive queries times the `groups` query heads of its KV head (the group folded into M), so K and V
are read once per KV head and tile. It walks key tiles from the first position its earliest query's
window reaches to its last query's position (tiles wholly outside the causal/window range are never
loaded), gathering each position's block through the page table, with an online softmax in base 2.
Programs past their sequence's chunk run no loop and store nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from agent_kernels.dispatch import interpreting, use_triton
from agent_kernels.paged_kv import load_kv_tile, tile_scores

BLOCK_M = 64  # rows (query x group) per program


def reference_paged_prefill_attention(q, cache_k, cache_v, block_table, query_start, context_lens,
                                      max_query_len: int, scale: float, window: int | None = None,
                                      softcap: float | None = None, k_scale: float = 1.0,
                                      v_scale: float = 1.0) -> torch.Tensor:
    """Plain torch, the definition of correct: per sequence, gather its keys, causal/window mask, fp32 softmax."""
    tokens, heads, dim = q.shape
    size, kv_heads = cache_k.shape[1:3]
    groups = heads // kv_heads
    out = torch.zeros(tokens, heads, dim, dtype=torch.float32, device=q.device)
    starts = query_start.tolist() if torch.is_tensor(query_start) else list(query_start)
    contexts = context_lens.tolist() if torch.is_tensor(context_lens) else list(context_lens)
    for b, ctx in enumerate(contexts):
        first, n = starts[b], starts[b + 1] - starts[b]
        if n == 0:
            continue
        pos = torch.arange(ctx + n, device=q.device)
        blocks = block_table[b].long()[pos // size]
        k = cache_k[blocks, pos % size].float() * k_scale  # [L, KVH, D]
        v = cache_v[blocks, pos % size].float() * v_scale
        grouped = q[first : first + n].float().view(n, kv_heads, groups, dim)
        scores = torch.einsum("nkgd,lkd->kgnl", grouped, k) * scale
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        q_pos = pos[ctx:, None]
        visible = pos[None, :] <= q_pos
        if window is not None:
            visible &= pos[None, :] > q_pos - window
        scores = scores.masked_fill(~visible, float("-inf"))
        out[first : first + n] = torch.einsum("kgnl,lkd->nkgd", scores.softmax(-1), v).reshape(n, heads, dim)
    return out.to(q.dtype)


def paged_prefill_attention(q, cache_k, cache_v, block_table, query_start, context_lens, max_query_len: int,
                            scale: float, window: int | None = None, softcap: float | None = None,
                            k_scale: float = 1.0, v_scale: float = 1.0) -> torch.Tensor:
    """Causal attention out [T, H, D] for the varlen queries q [T, H, D]: Triton where dispatch says so."""
    if not use_triton(q):
        return reference_paged_prefill_attention(q, cache_k, cache_v, block_table, query_start, context_lens,
                                                 max_query_len, scale, window, softcap, k_scale, v_scale)
    tokens, heads, dim = q.shape
    size, kv_heads = cache_k.shape[1:3]
    groups = heads // kv_heads
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty(tokens, heads, dim, dtype=q.dtype, device=q.device)
    block_m = max(BLOCK_M, triton.next_power_of_2(groups))
    block_q = block_m // groups  # queries per program
    block_d = max(16, triton.next_power_of_2(dim))  # tl.dot needs 16
    fp32_dot = q.dtype == torch.float32 or interpreting()  # the interpreter's 16-bit tl.dot is wrong
    grid = (block_table.shape[0], triton.cdiv(max_query_len, block_q), kv_heads)
    _prefill_kernel[grid](
        q, cache_k, cache_v, block_table, query_start, context_lens, out,
        q.stride(0), q.stride(1), *cache_k.stride()[:3], *cache_v.stride()[:3], block_table.stride(0),
        out.stride(0), out.stride(1), scale * k_scale, v_scale, 1.0 if softcap is None else softcap, window or 0,
        GROUPS=groups, HEAD_DIM=dim, BLOCK_SIZE=size, BLOCK_M=block_m, BLOCK_Q=block_q, BLOCK_D=block_d,
        BLOCK_N=64 if block_d * cache_k.element_size() <= 256 else 32,  # keeps pipelined K/V tiles in smem
        USE_WINDOW=window is not None, USE_SOFTCAP=softcap is not None,
        DOT_FP32=fp32_dot, DOT_PRECISION="ieee" if fp32_dot else "tf32",  # tf32: unused by 16-bit dots
    )
    return out


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, starts_ptr, contexts_ptr, out_ptr,
    stride_qt, stride_qh, stride_kb, stride_kp, stride_kh, stride_vb, stride_vp, stride_vh, stride_tb,
    stride_ot, stride_oh, qk_scale, v_scale, softcap, window,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, USE_WINDOW: tl.constexpr,
    USE_SOFTCAP: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One (sequence, query tile, KV head): online softmax over the key tiles its queries can see."""
    seq = tl.program_id(0)
    q_tile = tl.program_id(1)
    kv_head = tl.program_id(2)
    first_token = tl.load(starts_ptr + seq).to(tl.int32)
    query_len = tl.load(starts_ptr + seq + 1).to(tl.int32) - first_token
    context = tl.load(contexts_ptr + seq).to(tl.int32)

    rows = tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    offs = tl.arange(0, BLOCK_N)
    query = q_tile * BLOCK_Q + rows // GROUPS
    heads = kv_head * GROUPS + rows % GROUPS
    # Rows past BLOCK_Q * GROUPS (when groups does not divide BLOCK_M) and past the chunk are padding.
    row_ok = (rows < BLOCK_Q * GROUPS) & (query < query_len)
    dim_ok = dims < HEAD_DIM
    q_pos = context + query
    # Keys from the first query's window start to the last query's position; empty past the chunk.
    end = context + tl.minimum(query_len, q_tile * BLOCK_Q + BLOCK_Q)
    lo = 0
    if USE_WINDOW:
        lo = tl.maximum(context + q_tile * BLOCK_Q - window + 1, 0)

    io_mask = row_ok[:, None] & dim_ok[None, :]
    q = tl.load(q_ptr + (first_token + query)[:, None] * stride_qt + heads[:, None] * stride_qh + dims[None, :],
                mask=io_mask, other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    table = table_ptr + seq.to(tl.int64) * stride_tb
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for tile in range((lo // BLOCK_N) * BLOCK_N, end, BLOCK_N):
        pos = tile + offs
        key_ok = (pos >= lo) & (pos < end)
        k, v = load_kv_tile(k_ptr, v_ptr, table, pos, key_ok, dims, dim_ok, kv_head, stride_kb, stride_kp,
                            stride_kh, stride_vb, stride_vp, stride_vh, BLOCK_SIZE)
        scores = tile_scores(q, k, qk_scale, softcap, USE_SOFTCAP, DOT_PRECISION)
        v = v.to(q.dtype)
        visible = pos[None, :] <= q_pos[:, None]
        if USE_WINDOW:
            visible = visible & (pos[None, :] > q_pos[:, None] - window)
        scores = tl.where(visible, scores * 1.4426950408889634, float("-inf"))  # log2(e): exp2 below
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        # A row may see nothing in this tile (causal or window edge) and nothing before it: keep it at 0.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(scores - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    result = acc * (v_scale / tl.where(l_i > 0, l_i, 1.0))[:, None]
    tl.store(out_ptr + (first_token + query)[:, None] * stride_ot + heads[:, None] * stride_oh + dims[None, :],
             result.to(out_ptr.dtype.element_ty), mask=io_mask)

