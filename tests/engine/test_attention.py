"""Attention over the slot cache against a naive per-query float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from engine.attention import attend, write_kv
from engine.forward_batch import ForwardBatch

HEADS, KV_HEADS, DIM, MAX_LEN = 6, 2, 8, 64


def naive(q, keys, values, positions_q, window, softcap, scale):
    """q [n, H, D] at absolute positions; keys/values [KVH, L, D] of positions 0..L-1."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    group = HEADS // KV_HEADS
    for i, pos in enumerate(positions_q):
        for h in range(HEADS):
            k, v = keys[h // group].double(), values[h // group].double()
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
    cache_k = torch.zeros(3, KV_HEADS, MAX_LEN, DIM, dtype=dtype)
    cache_v = torch.zeros_like(cache_k)
    slots_used = (0, 2)  # slot 1 stays empty: batches need not use contiguous slots
    full_k = {s: torch.randn(KV_HEADS, 20, DIM).to(dtype) for s in slots_used}
    full_v = {s: torch.randn(KV_HEADS, 20, DIM).to(dtype) for s in slots_used}

    def run(chunks: dict[int, tuple[int, int]]):
        """chunks: slot -> (start, end) of new tokens; returns (outputs, queries)."""
        slots = list(chunks)
        starts = [chunks[s][0] for s in slots]
        tokens = [list(range(chunks[s][0], chunks[s][1])) for s in slots]
        batch = ForwardBatch.build(tokens, slots, starts, torch.device("cpu"))
        k = torch.cat([full_k[s][:, a:b].transpose(0, 1) for s, (a, b) in chunks.items()])
        v = torch.cat([full_v[s][:, a:b].transpose(0, 1) for s, (a, b) in chunks.items()])
        q = torch.randn(k.shape[0], HEADS, DIM).to(dtype)
        write_kv(cache_k, cache_v, k, v, batch)
        return attend(q, cache_k, cache_v, batch, scale, window, softcap), q, batch

    # Prefill: two sequences, one in two chunks (the second chunk attends to the first).
    for chunks in ({0: (0, 6), 2: (0, 17)}, {0: (6, 11)}, {0: (11, 12), 2: (17, 18)}):
        out, q, batch = run(chunks)
        start = 0
        for slot, n, ctx in zip(batch.slots, batch.query_lens, batch.context_lens, strict=True):
            ref = naive(q[start : start + n], cache_k[slot, :, : ctx + n], cache_v[slot, :, : ctx + n],
                        range(ctx, ctx + n), window, softcap, scale)
            assert torch.allclose(out[start : start + n].double(), ref, atol=tol, rtol=tol)
            start += n
