"""The Triton paged prefill-attention kernel against its plain-torch reference (Triton's interpreter on CPU).

Tolerances: fp32 2e-5; bf16/fp16 outputs 2e-2 (on CPU the interpreter computes in fp32 and only the
output rounds; on a GPU the dots run in 16 bits); fp8 caches with fp32 queries 2e-5 (both sides
dequantize the same stored values).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from paged_cases import BLOCK, TOL, paged_caches

from agent_kernels import dispatch
from agent_kernels.paged_decode_attention import reference_paged_decode_attention
from agent_kernels.paged_prefill_attention import paged_prefill_attention, reference_paged_prefill_attention


def _case(query_lens, context_lens, heads, kv_heads, dim=64, dtype=torch.float32, cache_dtype=None, seed=0,
          device="cpu"):
    """q [T, H, D], caches, a shuffled block table (entries past each sequence set to UNUSED),
    query_start, context_lens, max_query_len."""
    gen = torch.Generator().manual_seed(seed)
    totals = [n + c for n, c in zip(query_lens, context_lens, strict=True)]
    cache_k, cache_v, table = paged_caches(totals, kv_heads, dim, cache_dtype or dtype, gen)
    q = torch.randn(sum(query_lens), heads, dim, generator=gen).to(dtype)
    starts = torch.tensor([0, *query_lens]).cumsum(0)
    tensors = q, cache_k, cache_v, table, starts, torch.tensor(context_lens)
    return *(t.to(device) for t in tensors), max(query_lens)


def _check(case, scale=0.125, window=None, softcap=None, k_scale=1.0, v_scale=1.0):
    q = case[0]
    expected = reference_paged_prefill_attention(*case, scale, window, softcap, k_scale, v_scale)
    with dispatch.forced():
        got = paged_prefill_attention(*case, scale, window, softcap, k_scale, v_scale)
    assert got.dtype == q.dtype and got.shape == q.shape
    tol = TOL[q.dtype]
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


# Chunks from the start of their sequences, both sides of block boundaries (15, 16, 17, 33).
@pytest.mark.parametrize("heads, kv_heads", [(2, 2), (6, 2), (8, 2)])  # MHA, groups 3, groups 4
@pytest.mark.parametrize("dim", [64, 80])
def test_fresh_prompts_equal_reference(heads, kv_heads, dim):
    _check(_case([1, 15, 16, 17, 33], [0, 0, 0, 0, 0], heads, kv_heads, dim))


# Chunked prefill: odd chunks after cached prefixes (one chunk crossing blocks, one empty, one long
# enough for several query tiles), a window smaller than the context, soft-capping.
@pytest.mark.parametrize("window, softcap", [(None, None), (12, None), (None, 5.0), (20, 5.0)])
def test_chunks_after_cached_prefixes_equal_reference(window, softcap):
    _check(_case([7, 0, 45, 1, 9], [5, 3, 40, 16, 130], 6, 2, seed=1), window=window, softcap=softcap)


@pytest.mark.parametrize("dim", [96, 128, 256])  # the model widths besides 64 and 80 (32-position tiles)
def test_other_head_dims_equal_reference(dim):
    _check(_case([9, 20], [30, 0], 4, 2, dim=dim, seed=9), window=25)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_equals_reference(dtype):
    _check(_case([13, 33], [4, 20], 8, 2, dim=80, dtype=dtype, seed=2), window=25)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_cache_with_scales_equals_reference(dtype):
    # The interpreter loads float8_e4m3fn and converts it like the GPU does.
    case = _case([11, 17], [6, 0], 3, 1, dtype=dtype, cache_dtype=torch.float8_e4m3fn, seed=3)
    _check(case, k_scale=0.5, v_scale=1.5)


def test_int64_block_table_and_strided_queries():
    q, k, v, table, starts, contexts, longest = _case([5, 19], [3, 14], 4, 2, seed=4)
    wide = torch.randn(q.shape[0], 4, 128)
    wide[..., :64] = q
    _check((wide[..., :64], k, v, table.long(), starts, contexts, longest))


def test_reference_equals_dense_sdpa():
    """Our reference against torch's SDPA on the sequence's keys gathered in order, with an explicit mask."""
    q, k, v, table, starts, contexts, longest = _case([9], [23], 6, 2, seed=5)
    window = 11
    pos = torch.arange(32)
    keys = k[table[0].long()[pos // BLOCK], pos % BLOCK].transpose(0, 1)[None]  # [1, KVH, L, D]
    values = v[table[0].long()[pos // BLOCK], pos % BLOCK].transpose(0, 1)[None]
    q_pos = torch.arange(23, 32)[:, None]
    mask = (pos[None, :] <= q_pos) & (pos[None, :] > q_pos - window)
    dense = F.scaled_dot_product_attention(q.transpose(0, 1)[None], keys, values, attn_mask=mask, scale=0.3,
                                           enable_gqa=True)[0].transpose(0, 1)
    got = reference_paged_prefill_attention(q, k, v, table, starts, contexts, longest, 0.3, window)
    torch.testing.assert_close(got, dense, rtol=1e-5, atol=1e-5)


def test_one_query_per_sequence_is_decode():
    q, k, v, table, starts, contexts, longest = _case([1, 1, 1], [0, 16, 40], 6, 2, seed=6)
    decode = reference_paged_decode_attention(q, k, v, table, contexts + 1, 0.2, 8, 20.0)
    with dispatch.forced():
        got = paged_prefill_attention(q, k, v, table, starts, contexts, longest, 0.2, 8, 20.0)
    torch.testing.assert_close(got, decode, rtol=2e-5, atol=2e-5)


def test_cpu_tensors_run_the_reference_unless_forced():
    case = _case([4, 6], [2, 0], 4, 2, seed=7)
    assert torch.equal(paged_prefill_attention(*case, 0.1), reference_paged_prefill_attention(*case, 0.1))


@pytest.mark.gpu
def test_cuda_kernel_equals_reference():
    for dtype in (torch.bfloat16, torch.float32):
        case = _case([1, 17, 0, 300, 129], [0, 33, 5, 700, 0], 32, 8, dim=128, dtype=dtype, seed=8, device="cuda")
        _check(case)
        _check(case, window=256, softcap=30.0)
