"""Decode attention over the paged KV cache: the compiled step's fused form against the eager code.

`_decode_attention` (views of the cache, or a gather, and SDPA/eager softmax per batch) is the
reference; `paged_decode_attention` (gather, products and reductions that inductor fuses) must
agree with it for GQA, sliding windows, soft-capping, odd lengths, block boundaries and
non-consecutive blocks, eagerly and under torch.compile.
"""

from __future__ import annotations

import pytest
import torch

from engine.attention import _decode_attention, paged_decode_attention

BLOCK = 16


def _case(seqs: int, lengths: list[int], heads: int, kv_heads: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    blocks = max(-(-n // BLOCK) for n in lengths)
    pool = seqs * blocks + 3
    cache_k = torch.randn(pool, BLOCK, kv_heads, 32, generator=gen)
    cache_v = torch.randn(pool, BLOCK, kv_heads, 32, generator=gen)
    table = torch.randperm(pool, generator=gen)[: seqs * blocks].view(seqs, blocks)  # scattered blocks
    q = torch.randn(seqs, heads, 32, generator=gen)
    lens = torch.tensor(lengths)
    first = torch.full((seqs,), -1)
    return q, cache_k, cache_v, table, lens, first


@pytest.mark.parametrize("lengths", [[1], [17], [16, 33, 5], [300, 2]])  # 300: the per-sequence path
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (6, 2)])
@pytest.mark.parametrize("window, softcap", [(None, None), (7, None), (None, 30.0), (20, 5.0)])
def test_paged_form_equals_the_eager_decode_attention(lengths, heads, kv_heads, window, softcap):
    q, k, v, table, lens, first = _case(len(lengths), lengths, heads, kv_heads)
    expected = _decode_attention(q, k, v, table, lens, first, 0.17, window, softcap)
    got = paged_decode_attention(q, k, v, table, lens, 0.17, window, softcap)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_paged_form_compiled_equals_eager():
    compiled = torch.compile(paged_decode_attention, dynamic=True, fullgraph=True)
    for lengths in ([5, 40, 17], [33]):
        q, k, v, table, lens, first = _case(len(lengths), lengths, 6, 2, seed=len(lengths))
        expected = _decode_attention(q, k, v, table, lens, first, 0.2, 24, None)
        torch.testing.assert_close(compiled(q, k, v, table, lens, 0.2, 24, None), expected, rtol=1e-5, atol=1e-5)


def test_consecutive_blocks_read_as_views_give_the_same_result():
    q, k, v, table, lens, _ = _case(2, [300, 290], 6, 2)
    table = torch.arange(2 * table.shape[1]).view(2, -1)  # consecutive per sequence
    first = table[:, 0].clone()
    expected = _decode_attention(q, k, v, table, lens, torch.full((2,), -1), 0.2, None, None)
    torch.testing.assert_close(_decode_attention(q, k, v, table, lens, first, 0.2, None, None), expected)
