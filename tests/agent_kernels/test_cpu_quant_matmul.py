"""The AVX512-BF16 int4 and int8 matmuls (cpu_quant_matmul.cpp) against fp32 dequantize-then-matmul and PyTorch's kernels.

Skipped where the CPU lacks AVX512-BF16 (Int4Linear then packs for PyTorch's kernel instead).
"""

from __future__ import annotations

import pytest
import torch

from agent_kernels import cpu_extension
from agent_kernels import cpu_quant_matmul as kernel


@pytest.fixture(scope="module", autouse=True)
def supported():
    assert cpu_extension.load(), "the C++ extension did not build (gcc and ninja are project dependencies)"
    if not torch.ops.agent_runtime_cpu.bf16_matmul_supported():
        pytest.skip("this CPU has no AVX512-BF16")


def _case(n: int, k: int, m: int, group: int, seed: int = 0):
    """Codes, f16 scales/offsets [G, 2, N] and bf16 x."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    scale = torch.rand(n, k // group, generator=gen) * 0.02 + 0.001
    offset = torch.randn(n, k // group, generator=gen) * 0.05
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    return codes, kernel.scales_offsets(scale, offset), x


@pytest.mark.parametrize("n, k", [(16, 32), (48, 64), (80, 96), (960, 576), (576, 1536)])
def test_pack_unpack_round_trip(n, k):
    codes = _case(n, k, 1, 32)[0]
    packed = kernel.pack_int4(codes)
    assert packed.shape == (n // 16, k // 4, 32) and packed.dtype == torch.uint8
    assert torch.equal(kernel.unpack_int4(packed), codes.to(torch.uint8))


# Rows: every register block (1, 2, 3-4, 5-8) and remainders past 8; tiles: runs of 4 and their tails.
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 9, 13, 40])
@pytest.mark.parametrize("n, k, group", [(16, 64, 32), (48, 64, 32), (80, 128, 64), (112, 256, 128), (960, 576, 32)])
def test_kernel_equals_fp32_reference(m, n, k, group):
    codes, sz, x = _case(n, k, m, group)
    packed = kernel.pack_int4(codes)
    expected = (x.float() @ kernel.dequantize_int4(packed, sz, group).t())
    got = kernel.int4_mm(x, packed, group, sz).float()
    # fp32 accumulation in a different order, then one bf16 rounding: within 1 bf16 step of the value.
    tolerance = expected.abs() * 2**-8 + 1e-3
    assert ((got - expected).abs() <= tolerance).all(), (got - expected).abs().max()


def test_scales_and_offsets_are_kept_in_f16_or_refused():
    assert kernel.scales_offsets(torch.tensor([[0.5, 1.001e-7]]), torch.zeros(1, 2)) is None  # f16 loses bits
    assert kernel.scales_offsets(torch.tensor([[0.5, 2.0**-20]]), torch.zeros(1, 2)) is not None  # exact subnormal
    assert kernel.scales_offsets(torch.ones(1, 2), torch.full((1, 2), 1e6)) is None  # beyond f16
    so = kernel.scales_offsets(torch.tensor([[0.25, 0.0]]), torch.tensor([[-2.0, 1.5]]))
    assert so.dtype == torch.float16 and so.shape == (2, 2, 1)
    assert so[:, 0, 0].tolist() == [0.25, 0.0] and so[:, 1, 0].tolist() == [-2.0, 1.5]


def test_close_to_pytorchs_kernel_on_the_same_weight():
    codes, so, x = _case(64, 128, 3, 32)
    torch_packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    scale, offset = so[:, 0].float(), so[:, 1].float()  # [G, N]
    scales_zeros = torch.stack([scale, offset + 8 * scale], -1).contiguous()  # (q - 8) * s + z
    eye = torch.eye(128)
    theirs = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, torch_packed, 32, scales_zeros).t()
    assert torch.allclose(kernel.dequantize_int4(kernel.pack_int4(codes), so, 32), theirs, rtol=0, atol=1e-6)
    ours = kernel.int4_mm(x, kernel.pack_int4(codes), 32, so).float()
    aten = torch.ops.aten._weight_int4pack_mm_for_cpu(x, torch_packed, 32, scales_zeros.to(torch.bfloat16)).float()
    assert torch.allclose(ours, aten, rtol=2**-6, atol=2e-2)


def test_zero_rows():
    codes, sz, _ = _case(32, 64, 1, 32)
    out = kernel.int4_mm(torch.empty(0, 64, dtype=torch.bfloat16), kernel.pack_int4(codes), 32, sz)
    assert out.shape == (0, 32)


def test_bad_input_is_refused_with_a_message():
    codes, sz, x = _case(32, 64, 2, 32)
    packed = kernel.pack_int4(codes)
    with pytest.raises(RuntimeError, match="bf16"):
        kernel.int4_mm(x.float(), packed, 32, sz)
    with pytest.raises(RuntimeError, match="input columns"):
        kernel.int4_mm(torch.zeros(2, 32, dtype=torch.bfloat16), packed, 32, sz)
    with pytest.raises(RuntimeError, match="group"):
        kernel.int4_mm(x, packed, 24, sz)
    with pytest.raises(RuntimeError, match="scales_offsets"):
        kernel.int4_mm(x, packed, 32, sz.float())
    with pytest.raises(ValueError, match="out_features % 16"):
        kernel.pack_int4(torch.zeros(20, 64, dtype=torch.int32))


def test_under_torch_compile():
    codes, sz, x = _case(48, 64, 3, 32)
    packed = kernel.pack_int4(codes)
    compiled = torch.compile(lambda a: kernel.int4_mm(a, packed, 32, sz) * 2, dynamic=True)
    assert torch.equal(compiled(x), kernel.int4_mm(x, packed, 32, sz) * 2)


def _int8_case(n: int, k: int, m: int, group: int | None = None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    group = group or k
    codes = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int32).to(torch.int8)
    scale = torch.rand(k // group, n, generator=gen) * 0.01 + 0.001
    return codes, scale, group, torch.randn(m, k, generator=gen).to(torch.bfloat16)


def _int8_dense(codes, scale, group):
    n, k = codes.shape
    return (codes.float().view(n, k // group, group) * scale.t()[:, :, None]).view(n, k)


@pytest.mark.parametrize("n, k", [(16, 2), (48, 64), (80, 96), (576, 1536)])
def test_int8_pack_unpack_and_rows(n, k):
    codes = _int8_case(n, k, 1)[0]
    packed = kernel.pack_int8(codes)
    assert packed.shape == (n // 16, k // 2, 32) and packed.dtype == torch.int8
    assert torch.equal(kernel.unpack_int8(packed), codes)
    index = torch.tensor([[0, n - 1], [17 % n, 5]])
    assert torch.equal(kernel.int8_rows(packed, index), codes[index])


# One scale per row (group = K) and GGUF Q8_0's scale per 32 columns.
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 9, 13, 40])
@pytest.mark.parametrize("n, k", [(16, 64), (48, 64), (80, 128), (112, 576), (960, 576)])
@pytest.mark.parametrize("group", [None, 32], ids=["per-row", "group32"])
def test_int8_kernel_equals_fp32_reference(m, n, k, group):
    codes, scale, group, x = _int8_case(n, k, m, group)
    packed = kernel.pack_int8(codes)
    expected = x.float() @ _int8_dense(codes, scale, group).t()
    got = kernel.int8_mm(x, packed, group, scale).float()
    tolerance = expected.abs() * 2**-8 + 1e-3
    assert ((got - expected).abs() <= tolerance).all(), (got - expected).abs().max()
    if group == k:  # PyTorch's kernel: a scale per row (bf16)
        aten = torch.ops.aten._weight_int8pack_mm(x, codes, scale[0].to(torch.bfloat16)).float()
        assert ((got - aten).abs() <= 2 * tolerance + expected.abs() * 2**-8).all()


def test_int8_bad_input_is_refused_with_a_message():
    codes, scale, group, x = _int8_case(32, 64, 2)
    packed = kernel.pack_int8(codes)
    with pytest.raises(RuntimeError, match="bf16"):
        kernel.int8_mm(x.float(), packed, group, scale)
    with pytest.raises(RuntimeError, match="input columns"):
        kernel.int8_mm(torch.zeros(2, 32, dtype=torch.bfloat16), packed, group, scale)
    with pytest.raises(RuntimeError, match="scale"):
        kernel.int8_mm(x, packed, group, scale[:, :16])
    with pytest.raises(RuntimeError, match="scale"):
        kernel.int8_mm(x, packed, group, scale.to(torch.bfloat16))
    with pytest.raises(RuntimeError, match="group"):
        kernel.int8_mm(x, packed, 3, scale)
    with pytest.raises(RuntimeError, match="int8"):
        kernel.int8_mm(x, packed.view(torch.uint8), group, scale)
    with pytest.raises(ValueError, match="out_features % 16"):
        kernel.pack_int8(torch.zeros(20, 64, dtype=torch.int8))
