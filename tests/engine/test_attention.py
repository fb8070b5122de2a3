"""Attention over the paged KV cache against a naive per-query float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from engine.attention import attend, write_kv
from engine.forward_batch import ForwardBatch

HEADS, KV_HEADS, DIM, BLOCK, NUM_BLOCKS = 6, 2, 8, 4, 16
# Sequence "a" owns scattered blocks (gathered by table); "b" owns consecutive ones (read as a view).
TABLES = {"a": [12, 2, 15, 1, 11, 0], "b": [3, 4, 5, 6, 7]}


def naive(q, keys, values, positions_q, window, softcap, scale):
    """q [n, H, D] at absolute positions; keys/values [L, KVH, D] of positions 0..L-1."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    group = HEADS // KV_HEADS
    for i, pos in enumerate(positions_q):
        for h in range(HEADS):
            k, v = keys[:, h // group].double(), values[:, h // group].double()
            s = (k @ q[i, h].double()) * scale
            if softcap is not None:
                s = torch.tanh(s / softcap) * softcap
            allowed = torch.tensor([j <= pos and (window is None or j > pos - window) for j in range(k.shape[0])])
            s = s.masked_fill(~allowed, -math.inf)
            out[i, h] = torch.softmax(s, 0) @ v
    return out


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_prefill_chunks_and_batched_decode_match_reference(dtype, tol, window, softcap):
    torch.manual_seed(0)
    scale = DIM**-0.5
    cache_k = torch.zeros(NUM_BLOCKS, BLOCK, KV_HEADS, DIM, dtype=dtype)
    cache_v = torch.zeros_like(cache_k)
    full_k = {s: torch.randn(20, KV_HEADS, DIM).to(dtype) for s in TABLES}
    full_v = {s: torch.randn(20, KV_HEADS, DIM).to(dtype) for s in TABLES}

    def run(chunks: dict[str, tuple[int, int]]):
        """chunks: sequence -> (start, end) of its new tokens this step."""
        ids = list(chunks)
        batch = ForwardBatch.build(
            [list(range(*chunks[s])) for s in ids], [chunks[s][0] for s in ids], [TABLES[s] for s in ids],
            BLOCK, [True] * len(ids), ids, torch.device("cpu"),
        )
        k = torch.cat([full_k[s][a:b] for s, (a, b) in chunks.items()])
        v = torch.cat([full_v[s][a:b] for s, (a, b) in chunks.items()])
        q = torch.randn(k.shape[0], HEADS, DIM).to(dtype)
        write_kv(cache_k, cache_v, k, v, batch)
        return attend(q, cache_k, cache_v, batch, scale, window, softcap), q, batch

    # Prefill (one sequence in two chunks), then single and batched decode steps.
    for chunks in ({"a": (0, 6), "b": (0, 17)}, {"a": (6, 11)}, {"a": (11, 12)}, {"a": (12, 13), "b": (17, 18)}):
        out, q, batch = run(chunks)
        start = 0
        for seq, n, ctx in zip(batch.sequence_ids, batch.query_lens, batch.context_lens, strict=True):
            ref = naive(q[start : start + n], full_k[seq][: ctx + n], full_v[seq][: ctx + n],
                        range(ctx, ctx + n), window, softcap, scale)
            assert torch.allclose(out[start : start + n].double(), ref, atol=tol, rtol=tol), (seq, chunks)
            start += n
    assert batch.first_block == [-1, 3]  # the view path and the gather path both ran
