"""agent_kernels/scaled_matmul.py: the Triton kernel (Triton's interpreter on CPU, or CUDA) against its reference.

Tolerances, as max |kernel - reference| / max |reference| over the output: fp32 1e-5 (the two
differ only in fp32 summation order and where the scale is applied); bf16 2**-6 (both sum in
fp32, then round to bf16: one bf16 step is 2**-8 of the output's magnitude at most, and the
interpreter rounds fp32 -> bf16 by truncation, so allow a few).
"""

from __future__ import annotations

import pytest
import torch

from agent_kernels import dispatch
from agent_kernels.scaled_matmul import reference_scaled_matmul, scaled_matmul

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2.0**-6}
SHAPES = [(96, 40), (128, 72)]  # (K, N): neither a multiple of BLOCK_N, K = 96 not of BLOCK_K


def case(m: int, k: int, n: int, dtype: torch.dtype, codes: torch.dtype, bias: bool, device: str = "cpu",
         seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    if codes == torch.int8:
        w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    else:
        w = (torch.randn(n, k, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    scale = torch.rand(n, generator=g) / 50 + 1e-3
    b = torch.randn(n, generator=g) if bias else None
    to = dict(device=device)
    return (x.to(dtype=dtype, **to), w.to(**to), scale.to(dtype=dtype, **to),
            None if b is None else b.to(dtype=dtype, **to))


def relative_max_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.mark.parametrize("codes", [torch.int8, torch.float8_e4m3fn], ids=["int8", "fp8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("k, n", SHAPES)
@pytest.mark.parametrize("m", [1, 5, 33])
def test_triton_equals_reference(m, k, n, dtype, codes):
    x, w, scale, bias = case(m, k, n, dtype, codes, bias=m != 5)
    expected = reference_scaled_matmul(x, w, scale, bias)
    with dispatch.forced():
        got = scaled_matmul(x, w, scale, bias)
    assert got.dtype == dtype and got.shape == (m, n)
    assert relative_max_error(got, expected) <= TOLERANCE[dtype]


def test_reference_is_dequantize_then_matmul():
    x, w, scale, bias = case(5, 96, 40, torch.float32, torch.float8_e4m3fn, bias=True)
    dense = w.float() * scale[:, None]
    torch.testing.assert_close(reference_scaled_matmul(x, w, scale, bias), x @ dense.T + bias)


def test_strided_activations_and_fp16():
    x, w, scale, bias = case(9, 2 * 128, 72, torch.float16, torch.int8, bias=True)
    x = x[:, ::2]  # stride 2 along K: the kernel reads x through its strides
    w = w[:, :128]
    expected = reference_scaled_matmul(x, w, scale, bias)
    with dispatch.forced():
        got = scaled_matmul(x, w.contiguous(), scale, bias)
    assert relative_max_error(got, expected) <= 2.0**-9


def test_off_cuda_without_forcing_runs_the_reference():
    x, w, scale, bias = case(3, 96, 40, torch.float32, torch.int8, bias=True)
    assert torch.equal(scaled_matmul(x, w, scale, bias), reference_scaled_matmul(x, w, scale, bias))


def test_bad_inputs_are_named():
    x, w, scale, _ = case(2, 96, 40, torch.float32, torch.int8, bias=False)
    with pytest.raises(ValueError, match="int8 or float8_e4m3fn"):
        scaled_matmul(x, w.to(torch.int16), scale)
    with pytest.raises(ValueError, match="shapes do not chain"):
        scaled_matmul(x[:, :64], w, scale)


@pytest.mark.gpu
@pytest.mark.parametrize("codes", [torch.int8, torch.float8_e4m3fn], ids=["int8", "fp8"])
@pytest.mark.parametrize("m", [1, 33, 300])
def test_cuda_kernel_equals_reference(m, codes):
    if codes == torch.float8_e4m3fn and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 codes need compute capability 8.9 (the dispatch runs the reference there)")
    x, w, scale, bias = case(m, 4096 + 96, 1000, torch.bfloat16, codes, bias=True, device="cuda")
    expected = reference_scaled_matmul(x, w, scale, bias)
    got = scaled_matmul(x, w, scale, bias)
    assert relative_max_error(got, expected) <= TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("codes", [torch.int8, torch.float8_e4m3fn], ids=["int8", "fp8"])
def test_every_code_converts_exactly(codes, dtype):
    """x = identity picks each code out alone: the kernel's conversion of all 256 int8 values, or all
    254 finite e4m3 values (subnormals included), is exact in fp32 and bf16."""
    every = torch.arange(256, dtype=torch.uint8).view(codes)
    if codes == torch.float8_e4m3fn:
        every = every[~every.float().isnan()]
    w = every.view(2, -1)
    x = torch.eye(w.shape[1], dtype=dtype)
    with dispatch.forced():
        got = scaled_matmul(x, w, torch.ones(2, dtype=dtype))
    assert torch.equal(got.float(), w.float().T)


def test_no_rows_give_an_empty_output():
    x, w, scale, bias = case(0, 96, 40, torch.bfloat16, torch.int8, bias=True)
    with dispatch.forced():
        assert scaled_matmul(x, w, scale, bias).shape == (0, 40)
