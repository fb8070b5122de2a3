"""The Triton RMSNorm (plain and fused with the residual add) against its plain-torch reference.

On CPU the kernel runs in Triton's interpreter (agent_kernels.dispatch.forced). Tolerances: fp32 1e-5 (the
reduction order differs), fp16 5e-3, bf16 2e-2 (the interpreter casts fp32 -> bf16 by truncation,
one bf16 ulp, where torch rounds to nearest).
"""

from __future__ import annotations

import pytest
import torch

from agent_kernels import dispatch
from agent_kernels import rms_norm as kernel

TOL = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
}
DTYPES = list(TOL)


def _inputs(tokens: int, dim: int, dtype: torch.dtype, device: str = "cpu", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(tokens, dim, generator=gen) * 3).to(dtype).to(device)
    residual = torch.randn(tokens, dim, generator=gen).to(dtype).to(device)
    weight = (torch.randn(dim, generator=gen) * 0.5 + 1).to(dtype).to(device)
    return x, residual, weight


def _assert_matches(got, expected, dtype: torch.dtype) -> None:
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == 2
        for g, e in zip(got, expected, strict=True):
            _assert_matches(g, e, dtype)
        return
    assert got.dtype == expected.dtype and got.shape == expected.shape
    torch.testing.assert_close(got, expected, **TOL[dtype])


@pytest.mark.parametrize("tokens, dim", [(1, 64), (7, 37), (33, 96)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gemma", [False, True], ids=["llama", "gemma"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "fused_add"])
def test_triton_equals_reference(tokens, dim, dtype, gemma, with_residual):
    x, residual, weight = _inputs(tokens, dim, dtype)
    residual = residual if with_residual else None
    expected = kernel.reference_rms_norm(x, weight, 1e-6, gemma, residual)
    with dispatch.forced():
        got = kernel.rms_norm(x, weight, 1e-6, gemma, residual)
    _assert_matches(got, expected, dtype)


@pytest.mark.parametrize("gemma", [False, True], ids=["llama", "gemma"])
def test_strided_views_and_leading_dims(gemma):
    gen = torch.Generator().manual_seed(1)
    wide = torch.randn(2, 5, 50, generator=gen, dtype=torch.bfloat16)
    x = wide[..., 3:40]  # row stride 50, not 37
    residual = torch.randn(2, 5, 80, generator=gen, dtype=torch.bfloat16)[..., ::2][..., :37]  # column stride 2
    weight = torch.randn(80, generator=gen, dtype=torch.bfloat16)[::2][:37]  # stride 2
    expected = kernel.reference_rms_norm(x, weight, 1e-5, gemma, residual)
    with dispatch.forced():
        got = kernel.rms_norm(x, weight, 1e-5, gemma, residual)
    _assert_matches(got, expected, torch.bfloat16)
    assert got[0].shape == (2, 5, 37)


def test_fp32_weight_with_bf16_activations_promotes_like_the_reference():
    x, residual, _ = _inputs(7, 37, torch.bfloat16)
    weight = torch.randn(37, generator=torch.Generator().manual_seed(2))
    for gemma in (False, True):
        expected = kernel.reference_rms_norm(x, weight, 1e-6, gemma, residual)
        with dispatch.forced():
            got = kernel.rms_norm(x, weight, 1e-6, gemma, residual)
        _assert_matches(got, expected, torch.bfloat16)


def test_fused_add_rounds_the_sum_in_the_input_dtype():
    x, residual, weight = _inputs(7, 37, torch.float16)
    expected_sum = x + residual
    with dispatch.forced():
        _, got_sum = kernel.rms_norm(x, weight, 1e-6, False, residual)
    assert torch.equal(got_sum, expected_sum)  # fp16: one round-to-nearest, the same in both


def test_reference_matches_the_engine_formula_bit_for_bit():
    x, residual, weight = _inputs(7, 37, torch.bfloat16)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.equal(kernel.reference_rms_norm(x, weight, 1e-6), weight * h.to(torch.bfloat16))
    assert torch.equal(kernel.reference_rms_norm(x, weight, 1e-6, gemma=True),
                       (h * (1.0 + weight.float())).to(torch.bfloat16))
    normed, summed = kernel.reference_rms_norm(x, weight, 1e-6, residual=residual)
    assert torch.equal(summed, x + residual)
    assert torch.equal(normed, kernel.reference_rms_norm(x + residual, weight, 1e-6))


def test_cpu_tensors_run_the_reference_unless_forced(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path ran on CPU without forced()")

    monkeypatch.setattr(kernel, "triton_rms_norm", refuse)
    x, residual, weight = _inputs(7, 37, torch.float32)
    assert torch.equal(kernel.rms_norm(x, weight, 1e-6), kernel.reference_rms_norm(x, weight, 1e-6))
    got = kernel.rms_norm(x, weight, 1e-6, True, residual)
    expected = kernel.reference_rms_norm(x, weight, 1e-6, True, residual)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_equals_reference_on_cuda(dtype):
    for tokens, dim in [(1, 64), (7, 37), (33, 4096)]:
        x, residual, weight = _inputs(tokens, dim, dtype, device="cuda")
        for gemma in (False, True):
            for res in (None, residual):
                got = kernel.rms_norm(x, weight, 1e-6, gemma, res)
                _assert_matches(got, kernel.reference_rms_norm(x, weight, 1e-6, gemma, res), dtype)
