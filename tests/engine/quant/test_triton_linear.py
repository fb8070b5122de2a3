"""The Triton quantized linears (engine/quant/triton_linear.py) and fp8 in-situ quantization (isq.quantize_fp8).

Modules run their Triton kernels under `agent_kernels.dispatch.forced()` (the interpreter, on CPU) and
are compared with their own `reference` (dequantize, round to the activation dtype, F.linear).
Tolerances are relative Frobenius errors of the whole output: fp32 1e-5 (measured <= 3e-7); bf16
1e-2 (measured <= 6.3e-3; test_quant_linear.py allows the same for the CPU modules). In bf16 the
reference rounds the dequantized weight and its output to nearest (2.2e-3 from the exact product
here), while the interpreted kernels truncate to bf16 (the int4 weight, every output): 3.3e-3 (int8)
and 5.2e-3 (int4) from the exact product.

Quantizer and end-to-end bounds are exact up to float32 rounding (slack 1e-5 relative): fp8 e4m3
keeps 3 mantissa bits, so each weight is within 2**-4 of itself relatively, or 2**-10 * scale for
subnormal codes; an int4 module's output differs from the dense F.linear by at most
sum_k |x[k]| * scale[n, k // group] / 2 (half an int4 step per weight), element-wise.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agent_kernels import dispatch
from engine.quant.group_quant import GroupQuant
from engine.quant.isq import quantize_fp8, quantize_int4, quantize_int8
from engine.quant.triton_linear import (
    TritonFp8Linear,
    TritonInt4Linear,
    TritonInt8Linear,
    build_gpu_linear,
    int4_fits,
)

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
FP32_SLACK = 1e-5
SHAPES = [(40, 96, 32), (72, 128, 64)]  # (out, in, int4 group)
MODULES = {"int8": TritonInt8Linear, "fp8": TritonFp8Linear, "int4": TritonInt4Linear}


def random_weight(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Rows spanning three decades of magnitude and an all-zero row."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * torch.logspace(-2, 1, rows)[:, None]
    w[5] = 0.0
    return w


def quantized(kind: str, w: torch.Tensor, group: int) -> GroupQuant:
    return {"int8": quantize_int8, "fp8": quantize_fp8, "int4": lambda v: quantize_int4(v, group)}[kind](w)


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.float() - expected.float()).norm() / expected.float().norm()).item()


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("out_features, in_features, group", SHAPES)
@pytest.mark.parametrize("kind", ["int8", "fp8", "int4"])
def test_module_under_triton_equals_its_reference(kind, out_features, in_features, group, dtype, with_bias):
    g = torch.Generator().manual_seed(1)
    gq = quantized(kind, random_weight(out_features, in_features), group)
    bias = torch.randn(out_features, generator=g).to(dtype) if with_bias else None
    module = MODULES[kind](gq, bias, dtype)
    assert (module.out_features, module.in_features) == (out_features, in_features)
    for batch in ((1,), (5,), (3, 11)):  # decode, a few rows, and leading dims flattened to 33 rows
        x = torch.randn(*batch, in_features, generator=g).to(dtype)
        with dispatch.forced():
            out = module(x)
        expected = module.reference(x)
        assert out.dtype == dtype and out.shape == (*batch, out_features)
        err = rel_err(out, expected)
        print(f"{kind} {out_features}x{in_features} {str(dtype)[6:]} batch {batch}: relative error {err:.1e}")
        assert err <= TOLERANCE[dtype]


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_dequantize_is_the_group_quants_weight(kind):
    gq = quantized(kind, random_weight(72, 128), 32)
    assert torch.equal(MODULES[kind](gq, None, torch.float32).dequantize(), gq.dequantize())
    # In bf16 the module keeps its scales (and offsets) in bf16: the weight with those rounded.
    rounded = GroupQuant(gq.codes, gq.scale.bfloat16().float(),
                         None if gq.offset is None else gq.offset.bfloat16().float(), gq.group, gq.bits)
    assert torch.equal(MODULES[kind](gq, None, torch.bfloat16).dequantize(), rounded.dequantize())


def test_quantize_fp8_error_is_within_e4m3_rounding():
    w = random_weight(72, 128)
    gq = quantize_fp8(w)
    assert (gq.bits, gq.group, gq.offset, gq.codes.dtype) == (8, 128, None, torch.float8_e4m3fn)
    assert gq.scale.shape == (72, 1) and gq.codes.float().abs().max() <= 448
    assert torch.equal(gq.codes.float().abs().amax(-1)[gq.scale[:, 0] > 0], torch.full((71,), 448.0))
    err = (gq.dequantize() - w).abs()
    bound = torch.maximum(w.abs() * 2.0**-4, gq.scale * 2.0**-10)
    assert (err <= bound * (1 + FP32_SLACK)).all()
    assert err[5].max() == 0 and gq.scale[5] == 0
    rel = (err.norm() / w.norm()).item()
    assert rel <= 2.0**-5, rel  # measured 0.025 on this weight
    module = TritonFp8Linear(gq, None, torch.float32)
    assert torch.equal(module.dequantize(), gq.dequantize())


def test_quantize_fp8_takes_group_quants_chunk_by_chunk_and_fp8_weights_stack():
    gq = quantize_int4(random_weight(40, 96))
    from_gq = quantize_fp8(gq, chunk_rows=7)
    from_dense = quantize_fp8(gq.dequantize())
    assert torch.equal(from_gq.codes.view(torch.uint8), from_dense.codes.view(torch.uint8))
    assert torch.equal(from_gq.scale, from_dense.scale)
    both = GroupQuant.cat([from_gq.rows(slice(0, 10)), from_gq.rows(slice(10, 40))])
    assert torch.equal(both.dequantize(), from_gq.dequantize())


def test_int4_module_follows_the_dense_weight_within_half_a_step():
    w = random_weight(72, 128, seed=3)
    gq = quantize_int4(w, 32)
    module = TritonInt4Linear(gq, None, torch.float32)
    x = torch.randn(9, 128, generator=torch.Generator().manual_seed(4))
    with dispatch.forced():
        out = module(x)
    dense = F.linear(x, w)
    half_step = gq.scale.repeat_interleave(32, dim=1) / 2  # [72, 128]
    bound = x.abs() @ half_step.T
    assert ((out - dense).abs() <= bound * (1 + FP32_SLACK) + 1e-5).all()
    print(f"int4 group 32 vs dense: relative error {rel_err(out, dense):.3f}")
    assert rel_err(out, dense) <= 0.1  # measured 0.07: group-32 int4 moves a weight by ~7% of its group's std


def test_build_gpu_linear_picks_the_module_for_each_mode():
    w = random_weight(40, 96)
    int4 = quantize_int4(w)
    assert type(build_gpu_linear(int4, None, torch.bfloat16, "int4")) is TritonInt4Linear
    assert type(build_gpu_linear(int4, None, torch.bfloat16, "int8")) is TritonInt8Linear
    assert type(build_gpu_linear(int4, None, torch.bfloat16, "fp8")) is TritonFp8Linear
    # Not 4-bit, or an odd in_features: int4 falls back to int8 per-row.
    assert type(build_gpu_linear(quantize_int8(w), None, torch.bfloat16, "int4")) is TritonInt8Linear
    odd = GroupQuant(torch.zeros(4, 33, dtype=torch.uint8), torch.ones(4, 1), None, 33, 4)
    assert not int4_fits(odd)
    assert type(build_gpu_linear(odd, None, torch.bfloat16, "int4")) is TritonInt8Linear
    with pytest.raises(ValueError, match="does not fit the int4 kernel"):
        TritonInt4Linear(odd, None, torch.bfloat16)
    with pytest.raises(ValueError, match="invalid GPU quantization mode 'int3'"):
        build_gpu_linear(int4, None, torch.bfloat16, "int3")


def test_requantized_weights_are_their_formats_quantization():
    """A weight not in a module's format is quantized from its dequantized weight (as Int8Linear does)."""
    int4 = quantize_int4(random_weight(40, 96))
    int8 = TritonInt8Linear(int4, None, torch.float32)
    assert int8.codes.dtype == torch.int8 and torch.equal(int8.dequantize(), quantize_int8(int4).dequantize())
    fp8 = TritonFp8Linear(int4, None, torch.float32)
    assert fp8.codes.dtype == torch.float8_e4m3fn
    assert torch.equal(fp8.dequantize(), quantize_fp8(int4.dequantize()).dequantize())


@pytest.mark.parametrize("kind", ["int8", "fp8", "int4"])
def test_modules_move_with_to_and_fall_back_to_the_reference(kind):
    gq = quantized(kind, random_weight(40, 96), 32)
    module = MODULES[kind](gq, torch.zeros(40), torch.float32)
    buffers = {"int4": {"packed", "scale", "offset"}}.get(kind, {"codes", "scale"})
    assert set(dict(module.named_buffers())) == buffers
    on_meta = MODULES[kind](gq, torch.zeros(40), torch.float32).to("meta")
    assert all(t.device.type == "meta" for t in [*on_meta.buffers(), *on_meta.parameters()])
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(5))
    module.use_kernel = False
    with dispatch.forced():
        assert torch.equal(module(x), module.reference(x))
