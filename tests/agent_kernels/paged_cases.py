"""Random paged KV caches for the Triton attention-kernel tests (decode and prefill)."""

from __future__ import annotations

import torch

BLOCK = 16
UNUSED = 10**6  # padded block-table entries: reading one would fault, so the kernels must never load them
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}


def paged_caches(totals: list[int], kv_heads: int, dim: int, dtype: torch.dtype, gen: torch.Generator):
    """cache_k, cache_v [pool, BLOCK, kv_heads, dim] of `dtype` and a shuffled int32 block table holding
    sequence i's `totals[i]` positions (entries past them set to UNUSED)."""
    seqs = len(totals)
    blocks = max(1, max(-(-n // BLOCK) for n in totals))
    pool = seqs * blocks + 3
    cache_k = torch.randn(pool, BLOCK, kv_heads, dim, generator=gen).to(dtype)
    cache_v = torch.randn(pool, BLOCK, kv_heads, dim, generator=gen).to(dtype)
    table = torch.randperm(pool, generator=gen)[: seqs * blocks].view(seqs, blocks).to(torch.int32)
    for row, n in enumerate(totals):
        table[row, -(-n // BLOCK):] = UNUSED
    return cache_k, cache_v, table
