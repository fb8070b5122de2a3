"""The Triton KV-cache write (K and V in one launch) against its plain-torch reference.

On CPU the kernel runs in Triton's interpreter (agent_kernels.dispatch.forced). A write is a copy, or one
cast: same-dtype caches must match exactly; a cast to bf16 may differ by one bf16 ulp (the
interpreter truncates fp32 -> bf16, torch rounds to nearest). The interpreter cannot round to
float8 correctly, so fp8 caches are tested through the reference here and through the kernel on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from agent_kernels import dispatch
from agent_kernels import kv_cache_write as kernel

BLOCK = 4
NUM_BLOCKS = 16
FP8 = torch.float8_e4m3fn


def _case(tokens: int, kv_heads: int, head_dim: int, dtype: torch.dtype, cache_dtype: torch.dtype,
          device: str = "cpu", seed: int = 0, skipped: int = 2):
    """Random k, v; caches filled with random values (so an untouched row is visible); distinct slots,
    `skipped` of them set to -1."""
    gen = torch.Generator().manual_seed(seed)
    shape = (NUM_BLOCKS, BLOCK, kv_heads, head_dim)
    cache_k = torch.randn(shape, generator=gen).to(cache_dtype).to(device)
    cache_v = torch.randn(shape, generator=gen).to(cache_dtype).to(device)
    k = torch.randn(tokens, kv_heads, head_dim, generator=gen).to(dtype).to(device)
    v = torch.randn(tokens, kv_heads, head_dim, generator=gen).to(dtype).to(device)
    slots = torch.randperm(NUM_BLOCKS * BLOCK, generator=gen)[:tokens]
    slots[torch.randperm(tokens, generator=gen)[: min(skipped, tokens - 1)]] = -1
    return cache_k, cache_v, k, v, slots.to(device)


def _written(cache_k, cache_v, k, v, slots, forced: bool, **scales):
    """Copies of the caches after a write by the reference (forced=False) or the Triton kernel."""
    cache_k, cache_v = cache_k.clone(), cache_v.clone()
    if forced:
        with dispatch.forced():
            kernel.write_kv(cache_k, cache_v, k, v, slots, **scales)
    else:
        kernel.reference_write_kv(cache_k, cache_v, k, v, slots, **scales)
    return cache_k, cache_v


def _untouched_rows_unchanged(before: torch.Tensor, after: torch.Tensor, slots: torch.Tensor) -> bool:
    heads, dim = before.shape[-2:]
    untouched = torch.ones(before.shape[0] * before.shape[1], dtype=torch.bool, device=before.device)
    untouched[slots[slots >= 0]] = False
    flat_before, flat_after = before.reshape(-1, heads, dim), after.reshape(-1, heads, dim)
    return torch.equal(flat_before[untouched].view(torch.uint8), flat_after[untouched].view(torch.uint8))


@pytest.mark.parametrize("tokens", [1, 7, 33])
@pytest.mark.parametrize("kv_heads, head_dim", [(1, 64), (3, 80)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_equals_reference(tokens, kv_heads, head_dim, dtype):
    case = _case(tokens, kv_heads, head_dim, dtype, dtype, seed=tokens)
    expected = _written(*case, forced=False)
    got = _written(*case, forced=True)
    for g, e, before in zip(got, expected, case[:2], strict=True):
        assert torch.equal(g, e)
        assert _untouched_rows_unchanged(before, g, case[4])


@pytest.mark.parametrize("dtype, cache_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16),
                                                (torch.float32, torch.float16)])
def test_cast_to_a_cache_of_another_dtype(dtype, cache_dtype):
    case = _case(7, 3, 80, dtype, cache_dtype)
    expected = _written(*case, forced=False)
    got = _written(*case, forced=True)
    tol = {"rtol": 2e-2, "atol": 2e-2} if cache_dtype == torch.bfloat16 else {"rtol": 0, "atol": 0}
    for g, e, before in zip(got, expected, case[:2], strict=True):
        torch.testing.assert_close(g, e, **tol)
        assert _untouched_rows_unchanged(before, g, case[4])


def test_strided_k_v_from_a_fused_qkv_and_a_strided_cache():
    tokens, heads, kv_heads, dim = 7, 6, 2, 80
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim, generator=gen, dtype=torch.bfloat16)
    k = qkv[:, heads * dim : (heads + kv_heads) * dim].view(tokens, kv_heads, dim)
    v = qkv[:, (heads + kv_heads) * dim :].view(tokens, kv_heads, dim)
    padded = torch.randn(2, NUM_BLOCKS, BLOCK, kv_heads, dim + 16, generator=gen, dtype=torch.bfloat16)
    slots = torch.tensor([5, -1, 0, 63, 17, -1, 40])
    expected = padded.clone()
    kernel.reference_write_kv(expected[0, ..., :dim], expected[1, ..., :dim], k, v, slots)
    got = padded.clone()
    cache_k, cache_v = got[0, ..., :dim], got[1, ..., :dim]  # head stride dim + 16, K and V 2 KiB apart
    assert not cache_k.is_contiguous()
    with dispatch.forced():
        kernel.write_kv(cache_k, cache_v, k, v, slots)
    assert torch.equal(got, expected)  # the padding columns included


def test_all_slots_skipped_leaves_the_cache_unchanged():
    case = _case(7, 3, 80, torch.float32, torch.float32)
    case[4].fill_(-1)
    for forced in (False, True):
        got = _written(*case, forced=forced)
        assert torch.equal(got[0], case[0]) and torch.equal(got[1], case[1])


def test_reference_fp8_cache_stores_scaled_clamped_values():
    case = _case(7, 3, 80, torch.bfloat16, FP8)
    cache_k, cache_v, k, v, slots = case
    k = k * 300  # beyond e4m3's 448 after the scale below
    got_k, got_v = _written(cache_k, cache_v, k, v, slots, forced=False, k_scale=0.5, v_scale=2.0)
    keep = slots >= 0
    expected_k = (k[keep].float() / 0.5).clamp(-448, 448).to(FP8)
    expected_v = (v[keep].float() / 2.0).clamp(-448, 448).to(FP8)
    for got, expected, before in ((got_k, expected_k, cache_k), (got_v, expected_v, cache_v)):
        assert torch.equal(got.view(-1, 3, 80)[slots[keep]].view(torch.uint8), expected.view(torch.uint8))
        assert _untouched_rows_unchanged(before, got, slots)
    assert got_k.float().abs().max() == 448


@pytest.mark.skipif(not dispatch.interpreting(), reason="the interpreter's fp8 limit")
def test_triton_fp8_cache_is_refused_under_the_interpreter():
    case = _case(7, 3, 80, torch.bfloat16, FP8)
    with dispatch.forced(), pytest.raises(RuntimeError, match="float8_e4m3fn"):
        kernel.write_kv(*case)


def test_cpu_tensors_run_the_reference_unless_forced(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path ran on CPU without forced()")

    monkeypatch.setattr(kernel, "triton_write_kv", refuse)
    cache_k, cache_v, k, v, slots = _case(7, 3, 80, torch.float32, torch.float32)
    expected = _written(cache_k, cache_v, k, v, slots, forced=False)
    kernel.write_kv(cache_k, cache_v, k, v, slots)
    assert torch.equal(cache_k, expected[0]) and torch.equal(cache_v, expected[1])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, cache_dtype", [(torch.float32, torch.float32), (torch.float16, torch.float16),
                                                (torch.bfloat16, torch.bfloat16), (torch.bfloat16, FP8)])
def test_triton_equals_reference_on_cuda(dtype, cache_dtype):
    for tokens, kv_heads, head_dim in [(1, 1, 64), (7, 3, 80), (33, 8, 128)]:
        cache_k, cache_v, k, v, slots = _case(tokens, kv_heads, head_dim, dtype, cache_dtype, device="cuda")
        # Powers of two: torch on CUDA divides by a scalar as a multiply by its reciprocal, the kernel
        # divides (div_rn); with these scales both are exact, so the fp8 bytes must agree.
        scales = {"k_scale": 0.0625, "v_scale": 2.0} if cache_dtype == FP8 else {}
        k = k * 30
        got = cache_k.clone(), cache_v.clone()
        kernel.write_kv(*got, k, v, slots, **scales)  # a CUDA tensor: the Triton path
        expected = _written(cache_k, cache_v, k, v, slots, forced=False, **scales)
        for g, e, before in zip(got, expected, (cache_k, cache_v), strict=True):
            assert torch.equal(g.view(torch.uint8), e.view(torch.uint8))
            assert _untouched_rows_unchanged(before, g, slots)
