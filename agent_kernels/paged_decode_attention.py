"""Paged decode attention: one query per sequence over its paged KV cache (flash-decoding), Triton + reference.

Layout. q [B, H, D], one query per sequence at position seq_lens[b] - 1 (its own key already in the
cache); cache_k, cache_v [num_blocks, block_size, kv_heads, D] (fp32, fp16, bf16, or float8_e4m3fn
with per-tensor dequant scales k_scale, v_scale: real = stored * scale); position p of sequence b
lives at block block_table[b, p // block_size], offset p % block_size. H = kv_heads * groups (GQA;
MHA is groups = 1). The output [B, H, D] has q's dtype. A row with seq_len 0 (a padded CUDA-graph row)
gives zeros and reads nothing from the cache or the block table.

Semantics. scores = q . k * scale; with soft-capping c, scores = tanh(scores / c) * c; with a sliding
window w the query (at t = seq_len - 1) sees positions > t - w; softmax in fp32; out = probs . v.

Algorithm. One program per (sequence, KV head, context partition of `partition_size` positions): the
`groups` query heads of its KV head are the rows of tl.dot (padded to at least 16, the tensor-core
minimum), so K and V are read once per KV head. The program walks its partition in tiles of key
positions, gathering each position's block through the page table, with an online softmax in base 2
(running max, running sum, rescaled accumulator); tiles wholly before the window are skipped. When
the cache is longer than one partition (block_table width * block_size > partition_size: decided
from shapes alone, so a CUDA graph captures one path), each partition writes its normalized partial
output with its max and sum, and a second kernel merges the partitions of each (sequence, head).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from agent_kernels.dispatch import interpreting, use_triton
from agent_kernels.paged_kv import load_kv_tile, tile_scores

PARTITION_SIZE = 512  # key positions per program: long contexts are split over programs (flash-decoding)


def reference_paged_decode_attention(q, cache_k, cache_v, block_table, seq_lens, scale: float,
                                     window: int | None = None, softcap: float | None = None,
                                     k_scale: float = 1.0, v_scale: float = 1.0) -> torch.Tensor:
    """Plain torch, the definition of correct: per sequence, gather its positions, mask, fp32 softmax."""
    seqs, heads, dim = q.shape
    size, kv_heads = cache_k.shape[1:3]
    groups = heads // kv_heads
    out = torch.zeros(seqs, heads, dim, dtype=torch.float32, device=q.device)
    for b, length in enumerate(seq_lens.tolist()):
        if length == 0:
            continue
        lo = 0 if window is None else max(0, length - window)
        pos = torch.arange(lo, length, device=q.device)
        blocks = block_table[b].long()[pos // size]
        k = cache_k[blocks, pos % size].float() * k_scale  # [L, KVH, D]
        v = cache_v[blocks, pos % size].float() * v_scale
        grouped = q[b].float().view(kv_heads, groups, dim)
        scores = torch.einsum("kgd,lkd->kgl", grouped, k) * scale
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        out[b] = torch.einsum("kgl,lkd->kgd", scores.softmax(-1), v).reshape(heads, dim)
    return out.to(q.dtype)


def paged_decode_attention(q, cache_k, cache_v, block_table, seq_lens, scale: float, window: int | None = None,
                           softcap: float | None = None, k_scale: float = 1.0, v_scale: float = 1.0,
                           partition_size: int = PARTITION_SIZE) -> torch.Tensor:
    """Decode attention out [B, H, D] for q [B, H, D] over the paged caches: Triton where dispatch says so."""
    if not use_triton(q):
        return reference_paged_decode_attention(q, cache_k, cache_v, block_table, seq_lens, scale, window,
                                                softcap, k_scale, v_scale)
    return _triton_paged_decode_attention(q, cache_k, cache_v, block_table, seq_lens, scale, window, softcap,
                                          k_scale, v_scale, partition_size)


def _triton_paged_decode_attention(q, cache_k, cache_v, block_table, seq_lens, scale, window, softcap, k_scale,
                                   v_scale, partition_size):
    if partition_size < 16 or partition_size & (partition_size - 1):
        raise ValueError(f"partition_size must be a power of two >= 16, got {partition_size}")
    seqs, heads, dim = q.shape
    size, kv_heads = cache_k.shape[1:3]
    groups = heads // kv_heads
    partitions = triton.cdiv(block_table.shape[1] * size, partition_size)
    split = partitions > 1
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty(seqs, heads, dim, dtype=q.dtype, device=q.device)
    part_out = part_stats = out  # no partials without a split
    if split:  # empty partitions write nothing: the merge reads only the partitions a sequence's window covers
        part_out = torch.empty(seqs, heads, partitions, dim, dtype=torch.float32, device=q.device)
        part_stats = torch.empty(2, seqs, heads, partitions, dtype=torch.float32, device=q.device)  # max, sum
    block_d = max(16, triton.next_power_of_2(dim))  # tl.dot needs 16
    # Key positions per loop step: smaller for wide rows, to keep the pipelined K/V tiles in shared memory.
    tile = min(64 if block_d * cache_k.element_size() <= 256 else 32, partition_size)
    fp32_dot = q.dtype == torch.float32 or interpreting()  # the interpreter's 16-bit tl.dot is wrong
    common = dict(HEAD_DIM=dim, BLOCK_D=block_d, PARTITION=partition_size, USE_WINDOW=window is not None)
    _partition_kernel[(seqs, kv_heads, partitions)](
        q, cache_k, cache_v, block_table, seq_lens, out, part_out, part_stats,
        q.stride(0), q.stride(1), *cache_k.stride()[:3], *cache_v.stride()[:3], block_table.stride(0),
        out.stride(0), out.stride(1), scale * k_scale, v_scale,
        1.0 if softcap is None else softcap, window or 0,
        GROUPS=groups, BLOCK_SIZE=size, BLOCK_G=max(16, triton.next_power_of_2(groups)), BLOCK_N=tile,
        USE_SOFTCAP=softcap is not None, SPLIT=split,
        DOT_FP32=fp32_dot, DOT_PRECISION="ieee" if fp32_dot else "tf32",  # tf32: unused by 16-bit dots
        **common,
    )
    if split:
        _merge_kernel[(seqs, heads)](
            part_out, part_stats, seq_lens, out, out.stride(0), out.stride(1), partitions, v_scale, window or 0,
            BLOCK_P=triton.next_power_of_2(partitions), **common,
        )
    return out


@triton.jit
def _partition_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, out_ptr, part_out_ptr, part_stats_ptr,
    stride_qb, stride_qh, stride_kb, stride_kp, stride_kh, stride_vb, stride_vp, stride_vh, stride_tb,
    stride_ob, stride_oh, qk_scale, v_scale, softcap, window,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, PARTITION: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, USE_WINDOW: tl.constexpr,
    USE_SOFTCAP: tl.constexpr, SPLIT: tl.constexpr, DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One (sequence, KV head, partition): online softmax over the partition's visible positions."""
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    part = tl.program_id(2)
    seq_len = tl.load(lens_ptr + seq).to(tl.int32)
    lo = 0
    if USE_WINDOW:
        lo = tl.maximum(seq_len - window, 0)
    start = tl.maximum(part * PARTITION, (lo // BLOCK_N) * BLOCK_N)
    end = tl.minimum(part * PARTITION + PARTITION, seq_len)

    rows = tl.arange(0, BLOCK_G)
    dims = tl.arange(0, BLOCK_D)
    offs = tl.arange(0, BLOCK_N)
    heads = kv_head * GROUPS + rows
    row_ok = rows < GROUPS
    dim_ok = dims < HEAD_DIM
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    table = table_ptr + seq.to(tl.int64) * stride_tb
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for tile in range(start, end, BLOCK_N):
        pos = tile + offs
        visible = (pos >= lo) & (pos < end)
        k, v = load_kv_tile(k_ptr, v_ptr, table, pos, visible, dims, dim_ok, kv_head, stride_kb, stride_kp,
                            stride_kh, stride_vb, stride_vp, stride_vh, BLOCK_SIZE)
        scores = tile_scores(q, k, qk_scale, softcap, USE_SOFTCAP, DOT_PRECISION)
        v = v.to(q.dtype)
        scores = tl.where(visible[None, :], scores * 1.4426950408889634, float("-inf"))  # log2(e): exp2 below
        # Every tile holds a visible position, so the row max is finite.
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        p = tl.exp2(scores - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    if SPLIT:
        keep = rows < tl.where(start < end, GROUPS, 0)  # an empty partition stores nothing
        stats = (seq * (GROUPS * tl.num_programs(1)) + heads) * tl.num_programs(2) + part
        stats_count = tl.num_programs(0) * GROUPS * tl.num_programs(1) * tl.num_programs(2)
        tl.store(part_stats_ptr + stats, m_i, mask=keep)
        tl.store(part_stats_ptr + stats_count + stats, l_i, mask=keep)
        tl.store(part_out_ptr + stats[:, None] * HEAD_DIM + dims[None, :],
                 acc / tl.where(l_i > 0, l_i, 1.0)[:, None], mask=keep[:, None] & dim_ok[None, :])
    else:
        result = acc * (v_scale / tl.where(l_i > 0, l_i, 1.0))[:, None]  # all zeros when seq_len is 0
        tl.store(out_ptr + seq * stride_ob + heads[:, None] * stride_oh + dims[None, :],
                 result.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


@triton.jit
def _merge_kernel(
    part_out_ptr, part_stats_ptr, lens_ptr, out_ptr, stride_ob, stride_oh, num_partitions, v_scale, window,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PARTITION: tl.constexpr, BLOCK_P: tl.constexpr,
    USE_WINDOW: tl.constexpr,
):
    """One (sequence, head): weight each partition's output by its share of the softmax sum."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    seq_len = tl.load(lens_ptr + seq).to(tl.int32)
    first = 0
    if USE_WINDOW:
        first = tl.maximum(seq_len - window, 0) // PARTITION
    last = tl.cdiv(seq_len, PARTITION)
    base = (seq * tl.num_programs(1) + head) * num_partitions
    sum_base = tl.num_programs(0) * tl.num_programs(1) * num_partitions + base
    parts = tl.arange(0, BLOCK_P)
    used = (parts >= first) & (parts < last)
    maxima = tl.load(part_stats_ptr + base + parts, mask=used, other=float("-inf"))
    top = tl.max(maxima, 0)
    top = tl.where(top == float("-inf"), 0.0, top)  # seq_len 0: no partition, zero output
    total = tl.sum(tl.load(part_stats_ptr + sum_base + parts, mask=used, other=0.0) * tl.exp2(maxima - top), 0)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIM
    acc = tl.zeros([BLOCK_D], tl.float32)
    for part in range(first, last):
        weight = tl.load(part_stats_ptr + sum_base + part) * tl.exp2(tl.load(part_stats_ptr + base + part) - top)
        acc += weight * tl.load(part_out_ptr + (base + part) * HEAD_DIM + dims, mask=dim_ok, other=0.0)
    result = acc * (v_scale / tl.where(total > 0, total, 1.0))
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + dims, result.to(out_ptr.dtype.element_ty), mask=dim_ok)

