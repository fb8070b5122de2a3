"""agent_kernels/int4_matmul.py: packing, and the Triton kernel (interpreter on CPU, or CUDA) against its reference.

fp32: max |kernel - reference| / max |reference| <= 1e-5 (only the fp32 summation order differs;
measured <= 6e-7). bf16: both round the dequantized weight and the output to bf16, but Triton's
interpreter rounds fp32 -> bf16 by truncation where torch (and the GPU) round to nearest: up to one
bf16 step (2**-7 relative) per weight and on the output. So bf16 is checked element-wise against
that bound, |kernel - reference| <= 2**-7 * (|x| @ |w|.T + |reference|) (measured <= 0.52 of it);
on CUDA, where both round to nearest, the same bound holds with room to spare.
"""

from __future__ import annotations

import pytest
import torch

from agent_kernels import dispatch
from agent_kernels.int4_matmul import (
    dequantize_int4,
    int4_matmul,
    pack_int4,
    reference_int4_matmul,
    unpack_int4,
)

F32_TOLERANCE = 1e-5
BF16_STEP = 2.0**-7
SHAPES = [(96, 40, 32), (128, 72, 64)]  # (K, N, group): N not a multiple of BLOCK_N, K = 96 not of BLOCK_K


def case(m: int, k: int, n: int, group: int, dtype: torch.dtype, device: str = "cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    scale = torch.rand(n, k // group, generator=g) / 10 + 1e-3
    offset = -8 * scale + torch.randn(n, k // group, generator=g) * 0.05
    to = dict(device=device)
    return x.to(dtype=dtype, **to), pack_int4(codes).to(**to), scale.to(dtype=dtype, **to), offset.to(dtype=dtype, **to)


def check(got: torch.Tensor, expected: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    """The module docstring's tolerance for x's dtype; w is the fp32 dequantized weight."""
    assert got.dtype == expected.dtype == x.dtype and got.shape == expected.shape
    error = (got.float() - expected.float()).abs()
    if x.dtype == torch.float32:
        assert (error.max() / expected.abs().max()).item() <= F32_TOLERANCE
    else:
        bound = BF16_STEP * (x.float().abs() @ w.abs().T + expected.float().abs())
        assert (error <= bound).all(), f"worst error / bound {(error / bound).max().item():.2f}"


def test_pack_puts_even_columns_in_the_low_nibble_and_round_trips():
    codes = torch.tensor([[1, 2, 15, 0], [7, 8, 9, 10]], dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.tolist() == [[0x21, 0x0F], [0x87, 0xA9]]
    assert torch.equal(unpack_int4(packed), codes)
    every = torch.randint(0, 16, (72, 96), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    assert torch.equal(unpack_int4(pack_int4(every)), every)


def test_pack_refuses_odd_columns_and_wide_codes():
    with pytest.raises(ValueError, match="K even"):
        pack_int4(torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="0..15"):
        pack_int4(torch.full((2, 4), 16, dtype=torch.uint8))


def test_dequantize_applies_scale_and_offset_per_group():
    x, packed, scale, offset = case(1, 96, 40, 32, torch.float32)
    codes = unpack_int4(packed).float()
    group_of = torch.arange(96) // 32
    expected = codes * scale[:, group_of] + offset[:, group_of]
    torch.testing.assert_close(dequantize_int4(packed, scale, offset, 32), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("k, n, group", SHAPES)
@pytest.mark.parametrize("m", [1, 5, 33])
def test_triton_equals_reference(m, k, n, group, dtype):
    x, packed, scale, offset = case(m, k, n, group, dtype)
    expected = reference_int4_matmul(x, packed, scale, offset, group)
    with dispatch.forced():
        got = int4_matmul(x, packed, scale, offset, group)
    assert got.shape == (m, n)
    check(got, expected, x, dequantize_int4(packed, scale, offset, group))


def test_fp32_scales_with_bf16_activations_and_an_odd_group():
    """Any group size works (scale/offset are gathered per column), and the scales may be fp32."""
    x, packed, scale, offset = case(5, 96, 40, 48, torch.bfloat16)
    scale, offset = scale.float(), offset.float()
    expected = reference_int4_matmul(x, packed, scale, offset, 48)
    with dispatch.forced():
        got = int4_matmul(x, packed, scale, offset, 48)
    check(got, expected, x, dequantize_int4(packed, scale, offset, 48))


def test_off_cuda_without_forcing_runs_the_reference():
    x, packed, scale, offset = case(3, 96, 40, 32, torch.float32)
    assert torch.equal(int4_matmul(x, packed, scale, offset, 32), reference_int4_matmul(x, packed, scale, offset, 32))


def test_bad_groups_are_named():
    x, packed, scale, offset = case(2, 96, 40, 32, torch.float32)
    with pytest.raises(ValueError, match="group 64"):
        int4_matmul(x, packed, scale, offset, 64)
    with pytest.raises(ValueError, match="does not chain"):
        int4_matmul(x[:, :64], packed, scale, offset, 32)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 33, 300])
def test_cuda_kernel_equals_reference(m):
    x, packed, scale, offset = case(m, 4096 + 64, 1000, 32, torch.bfloat16, device="cuda")
    expected = reference_int4_matmul(x, packed, scale, offset, 32)
    got = int4_matmul(x, packed, scale, offset, 32)
    check(got.cpu(), expected.cpu(), x.cpu(), dequantize_int4(packed, scale, offset, 32).cpu())
