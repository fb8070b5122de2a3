"""Decode attention over the paged KV cache: its two paths against each other.

`_decode_attention` gathers short contexts of the whole batch into one padded attention call and
reads long ones (beyond _GATHER_MAX_POSITIONS) per sequence, as views of the cache when a
sequence's blocks are consecutive, else by a gather of its blocks. Both paths must give the same
result for GQA, sliding windows, soft-capping, odd lengths, block boundaries and scattered blocks.
"""

from __future__ import annotations

import pytest
import torch

import engine.attention as attention
from engine.attention import _decode_attention

BLOCK = 16


def _case(lengths: list[int], heads: int, kv_heads: int, consecutive: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    seqs = len(lengths)
    blocks = max(-(-n // BLOCK) for n in lengths)
    pool = seqs * blocks + 3
    cache_k = torch.randn(pool, BLOCK, kv_heads, 32, generator=gen)
    cache_v = torch.randn(pool, BLOCK, kv_heads, 32, generator=gen)
    order = torch.arange(pool) if consecutive else torch.randperm(pool, generator=gen)
    table = order[: seqs * blocks].view(seqs, blocks)
    first = table[:, 0].clone() if consecutive else torch.full((seqs,), -1)
    return torch.randn(seqs, heads, 32, generator=gen), cache_k, cache_v, table, torch.tensor(lengths), first


@pytest.mark.parametrize("lengths", [[1], [17], [16, 33, 5], [130, 2]])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (6, 2)])
@pytest.mark.parametrize("window, softcap", [(None, None), (7, None), (None, 30.0), (20, 5.0)])
@pytest.mark.parametrize("consecutive", [False, True])
def test_per_sequence_path_equals_the_batched_gather(monkeypatch, lengths, heads, kv_heads, window, softcap,
                                                     consecutive):
    q, k, v, table, lens, first = _case(lengths, heads, kv_heads, consecutive)
    monkeypatch.setattr(attention, "_GATHER_MAX_POSITIONS", 10_000)
    gathered = _decode_attention(q, k, v, table, lens, first, 0.17, window, softcap)
    monkeypatch.setattr(attention, "_GATHER_MAX_POSITIONS", 0)
    per_sequence = _decode_attention(q, k, v, table, lens, first, 0.17, window, softcap)
    torch.testing.assert_close(per_sequence, gathered, rtol=1e-5, atol=1e-5)
