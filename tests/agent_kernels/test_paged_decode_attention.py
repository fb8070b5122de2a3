"""The Triton paged decode-attention kernel against its plain-torch reference (Triton's interpreter on CPU).

Tolerances: fp32 2e-5; bf16/fp16 outputs 2e-2 (on CPU the interpreter computes in fp32 and only the
output rounds; on a GPU the dots run in 16 bits); fp8 caches with fp32 queries 2e-5 (both sides
dequantize the same stored values).
"""

from __future__ import annotations

import pytest
import torch
from paged_cases import TOL, paged_caches

from agent_kernels import cpu_decode_attention, dispatch
from agent_kernels.paged_decode_attention import paged_decode_attention, reference_paged_decode_attention


def _case(lengths, heads, kv_heads, dim=64, dtype=torch.float32, cache_dtype=None, seed=0, device="cpu"):
    """q, caches, a shuffled block table (entries past each length set to UNUSED), lengths."""
    gen = torch.Generator().manual_seed(seed)
    cache_k, cache_v, table = paged_caches(lengths, kv_heads, dim, cache_dtype or dtype, gen)
    q = torch.randn(len(lengths), heads, dim, generator=gen).to(dtype)
    tensors = q, cache_k, cache_v, table, torch.tensor(lengths)
    return tuple(t.to(device) for t in tensors)


def _check(case, scale=0.125, window=None, softcap=None, k_scale=1.0, v_scale=1.0, partition_size=512):
    q, cache_k, cache_v, table, lens = case
    expected = reference_paged_decode_attention(q, cache_k, cache_v, table, lens, scale, window, softcap,
                                                k_scale, v_scale)
    with dispatch.forced():
        got = paged_decode_attention(q, cache_k, cache_v, table, lens, scale, window, softcap, k_scale, v_scale,
                                     partition_size=partition_size)
    assert got.dtype == q.dtype and got.shape == q.shape
    tol = TOL[q.dtype]
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
    return got


# 1 token, both sides of block boundaries (15, 16, 17, 33), a padded row (0).
@pytest.mark.parametrize("heads, kv_heads", [(2, 2), (6, 2), (8, 2)])  # MHA, groups 3, groups 4
@pytest.mark.parametrize("dim", [64, 80])
def test_single_partition_equals_reference(heads, kv_heads, dim):
    _check(_case([1, 15, 0, 16, 17, 33], heads, kv_heads, dim))


# Partitions of 16 positions: up to 5 per sequence, merged by the second kernel; a window that leaves the
# first partitions empty; soft-capping; lengths on and off partition boundaries.
@pytest.mark.parametrize("window, softcap", [(None, None), (20, None), (None, 5.0), (9, 5.0)])
def test_split_partitions_merge_to_reference(window, softcap):
    _check(_case([1, 15, 16, 17, 32, 33, 0, 70], 6, 2, seed=1), window=window, softcap=softcap, partition_size=16)


@pytest.mark.parametrize("dim", [96, 128, 256])  # the model widths besides 64 and 80 (32-position tiles)
def test_other_head_dims_equal_reference(dim):
    _check(_case([17, 40], 4, 2, dim=dim, seed=9), window=30, partition_size=32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_equals_reference(dtype):
    _check(_case([17, 33, 0, 50], 8, 2, dim=80, dtype=dtype, seed=2), window=40, partition_size=32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_cache_with_scales_equals_reference(dtype):
    # The interpreter loads float8_e4m3fn and converts it like the GPU does.
    case = _case([5, 33, 16], 6, 2, dtype=dtype, cache_dtype=torch.float8_e4m3fn, seed=3)
    _check(case, k_scale=0.5, v_scale=1.5, partition_size=16)


def test_int64_block_table_and_strided_queries():
    q, k, v, table, lens = _case([3, 40], 4, 2, seed=4)
    wide = torch.randn(2, 4, 128)
    wide[..., :64] = q
    _check((wide[..., :64], k, v, table.long(), lens), partition_size=32)


def test_padded_rows_are_zero():
    got = _check(_case([0, 9, 0], 3, 1, seed=5), partition_size=16)
    assert not got[0].any() and not got[2].any()
    got = _check(_case([0, 0], 3, 1, seed=5))
    assert not got.any()


def test_reference_equals_cpu_decode_reference():
    """Our reference against an independently written one (gathers every block, masks after)."""
    q, k, v, table, lens = _case([1, 16, 17, 45], 9, 3, seed=6)
    table = table.clamp(max=k.shape[0] - 1)  # the other reference gathers padded entries too
    for window, softcap in [(None, None), (10, 30.0)]:
        torch.testing.assert_close(
            reference_paged_decode_attention(q, k, v, table, lens, 0.2, window, softcap),
            cpu_decode_attention.reference_decode_attention(q, k, v, table, lens, 0.2, window, softcap),
            rtol=1e-5, atol=1e-5)


def test_cpu_tensors_run_the_reference_unless_forced():
    q, k, v, table, lens = _case([5, 20], 4, 2, seed=7)
    assert torch.equal(paged_decode_attention(q, k, v, table, lens, 0.1),
                       reference_paged_decode_attention(q, k, v, table, lens, 0.1))


def test_partition_size_must_be_a_power_of_two():
    with dispatch.forced(), pytest.raises(ValueError, match="power of two"):
        paged_decode_attention(*_case([5], 2, 2), 0.1, partition_size=48)


@pytest.mark.gpu
def test_cuda_kernel_equals_reference():
    for dtype in (torch.bfloat16, torch.float32):
        case = _case([1, 17, 0, 33, 600, 1500], 32, 8, dim=128, dtype=dtype, seed=8, device="cuda")
        _check(case, window=700, softcap=30.0)
        _check(case, partition_size=128)
