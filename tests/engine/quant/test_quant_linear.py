"""Int4Linear / Int8Linear / Int8Embedding (engine/quant/) against dequantize-then-matmul in float32.

The reference is x.float() @ module.dequantize().T (+ bias): the weight the module itself stands for,
so the comparison measures the kernel alone. Tolerances are relative Frobenius errors of the whole
output, measured on this CPU (`-s` prints them): bf16 activations 1.6e-3 .. 3.2e-3 (the kernels round
activations, scales and the output to bf16), fp32 activations <= 2e-6; asserted at 1e-2 and 1e-5.
"""

from __future__ import annotations

import gguf
import pytest
import torch
from gguf import GGMLQuantizationType as T

from agent_kernels import cpu_quant_matmul
from engine.quant.embedding import Int8Embedding
from engine.quant.gguf_blocks import decode_blocks
from engine.quant.group_quant import GroupQuant
from engine.quant.isq import quantize_int4, quantize_int8
from engine.quant.linear import Int4Linear, Int8Linear, build_linear, int4_supported

TOLERANCE = {torch.bfloat16: 1e-2, torch.float32: 1e-5}
BATCHES = (1, 7, 64)
BF16_ROUNDING = 2.0**-8  # bf16 keeps 8 significant bits: round-to-nearest is within 2^-8 relative


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.float() - expected).norm() / expected.norm()).item()


def decoded(gguf_tensors, name: str) -> GroupQuant:
    tensor = gguf_tensors[name]
    rows, cols = (int(n) for n in reversed(tensor.shape))
    gq = decode_blocks(tensor.data, tensor.tensor_type, rows, cols)
    assert gq is not None
    return gq


@pytest.fixture(scope="module")
def weights(gguf_tensors) -> dict[str, GroupQuant]:
    """Random int4 weights, and real Q4_1 layers of the embedded model (decoded exactly). ffn_down keeps
    its 1536 input columns but only 128 of its 576 rows: Int4Linear.dequantize() runs the kernel on an
    identity of in_features rows, ~3 s for the whole layer on 2 cores."""
    g = torch.Generator().manual_seed(0)
    return {
        "random-64x256": quantize_int4(torch.randn(64, 256, generator=g)),
        "random-96x512-group128": quantize_int4(torch.randn(96, 512, generator=g) * 0.02, group=128),
        "blk.0.ffn_down": decoded(gguf_tensors, "blk.0.ffn_down.weight").rows(slice(0, 128)),  # [128, 1536]
        "blk.0.attn_q": decoded(gguf_tensors, "blk.0.attn_q.weight"),  # [576, 576]
    }


def check_kernel_against_dense(module, dtype: torch.dtype, bias: torch.Tensor | None, label: str) -> None:
    g = torch.Generator().manual_seed(1)
    weight = module.dequantize()
    for batch in BATCHES:
        x = torch.randn(batch, module.in_features, generator=g).to(dtype)
        out = module(x)
        assert out.dtype == dtype and out.shape == (batch, module.out_features)
        expected = x.float() @ weight.T + (0 if bias is None else bias.float())
        err = rel_err(out, expected)
        print(f"{label} {str(dtype)[6:]} batch {batch}: relative error {err:.2e}")
        assert err <= TOLERANCE[dtype], f"{label} batch {batch}: relative error {err:.2e}"


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("name", ["random-64x256", "random-96x512-group128", "blk.0.ffn_down", "blk.0.attn_q"])
def test_kernel_matches_dequantize_then_matmul(weights, name, kind, dtype, with_bias):
    gq = weights[name]
    rows = gq.shape[0]
    bias = torch.randn(rows, generator=torch.Generator().manual_seed(2)).to(dtype) if with_bias else None
    module = Int4Linear(gq, bias, dtype) if kind == "int4" else Int8Linear(gq, bias, dtype)
    assert module.use_kernel and (kind == "int4" or module.kernel_shape_ok)
    if kind == "int4":  # bf16 activations take our AVX512-BF16 kernel where the CPU has it
        ours = dtype == torch.bfloat16 and cpu_quant_matmul.enabled()
        assert module.layout == ("agent" if ours else "aten")
    check_kernel_against_dense(module, dtype, bias, f"{kind} {name}")
    # A leading batch dimension and strided activations give the same rows as the flat call.
    x = torch.randn(2, 5, 2 * gq.shape[1], generator=torch.Generator().manual_seed(3)).to(dtype)[..., ::2]
    assert not x.is_contiguous()
    flat = module(x.reshape(10, -1))
    assert torch.allclose(module(x).reshape(10, -1), flat, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("name", ["random-64x256", "random-96x512-group128", "blk.0.ffn_down", "blk.0.attn_q"])
def test_int4_dequantize_is_the_group_quant_within_the_rounding_of_its_scales(weights, name, dtype):
    """PyTorch's layout keeps scale and zero = offset + 8 * scale in the activation dtype, so its weight
    (q - 8) * scale + zero differs from GroupQuant's by at most (|q - 8| * |scale| + |zero|) * 2^-8 in bf16
    (measured: up to 0.98 of that bound) and by float32 rounding in f32 (measured <= 4.8e-7 absolute).
    Our bf16 layout keeps scale and offset in f16: within (q |scale| + |offset|) * 2^-11, and exact for
    GGUF Q4_1 (its d and m are f16)."""
    gq = weights[name]
    module = Int4Linear(gq, None, dtype)
    ours, exact = module.dequantize(), gq.dequantize()
    assert ours.dtype == torch.float32 and ours.shape == gq.shape
    fp32_slack = 1e-6 * exact.abs().max().item()
    err = (ours - exact).abs()
    if dtype == torch.float32:
        assert err.max().item() <= fp32_slack
        return
    rows, cols = gq.shape
    codes = gq.codes.float().view(rows, cols // gq.group, gq.group)
    if module.layout == "agent":  # q * scale + offset, both in f16 (GGUF's Q4_1 d and m: exact)
        bound = (codes * gq.scale[:, :, None].abs() + gq.offset[:, :, None].abs()) * 2**-11 + fp32_slack
        if name.startswith("blk."):
            assert err.max().item() <= fp32_slack
    else:
        zero = (gq.offset + 8 * gq.scale)[:, :, None]
        bound = ((codes - 8).abs() * gq.scale[:, :, None].abs() + zero.abs()) * BF16_ROUNDING + fp32_slack
    ratio = (err.view_as(bound) / bound).max().item()
    print(f"int4 {name}: dequantize error is {ratio:.3f} of the bf16 rounding bound")
    assert ratio <= 1.0


@pytest.mark.parametrize("name", ["random-64x256", "blk.0.ffn_down"])
def test_int8_linear_requantizes_per_row_within_half_a_step(weights, name):
    """Int8Linear takes any GroupQuant and requantizes it to one scale per row: its weight is within
    rowmax / 254 of the original (half a step), plus the rounding of the scale (|code| <= 127): bf16 in
    PyTorch's layout, none in ours (f32 scales)."""
    gq = weights[name]
    exact = gq.dequantize()
    rowmax = exact.abs().amax(-1, keepdim=True)
    for dtype, rounding in ((torch.float32, 1e-6), (torch.bfloat16, BF16_ROUNDING)):
        module = Int8Linear(gq, None, dtype)
        scale_dtype = torch.float32 if module.layout == "agent" else dtype
        assert module.weight_int8.dtype == torch.int8 and module.scale.dtype == scale_dtype
        assert module.group == gq.shape[1]
        err = (module.dequantize() - exact).abs()
        assert (err <= rowmax * (1 / 254 + rounding) * (1 + 1e-5)).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
def test_shapes_the_kernels_reject_run_the_reference(dtype):
    g = torch.Generator().manual_seed(4)
    # int4: the packer needs out_features % 16 == 0 and a group of 32/64/128/256.
    odd_rows = quantize_int4(torch.randn(40, 64, generator=g))
    assert not int4_supported(odd_rows)
    assert not int4_supported(quantize_int4(torch.randn(64, 64, generator=g), group=16))
    with pytest.raises(ValueError, match=r"\(40, 64\)"):
        Int4Linear(odd_rows, None, dtype)
    fallback = build_linear(odd_rows, None, dtype, prefer_int4=True)
    assert isinstance(fallback, Int8Linear)
    check_kernel_against_dense(fallback, dtype, None, "int8 for a 40-row int4 weight")
    # int8: the kernel only for in_features % 16 == 0; 72 columns take the reference path.
    bias = torch.randn(64, generator=g).to(dtype)
    narrow = Int8Linear(quantize_int8(torch.randn(64, 72, generator=g)), bias, dtype)
    assert not narrow.kernel_shape_ok
    x = torch.randn(7, 72, generator=g).to(dtype)
    assert torch.equal(narrow(x), narrow.reference(x))
    check_kernel_against_dense(narrow, dtype, bias, "int8 72 columns")


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_use_kernel_false_is_the_reference(weights, kind):
    gq = weights["random-64x256"]
    module = build_linear(gq, None, torch.bfloat16, prefer_int4=kind == "int4")
    assert isinstance(module, Int4Linear if kind == "int4" else Int8Linear)
    x = torch.randn(7, 256, dtype=torch.bfloat16)
    module.use_kernel = False
    assert torch.equal(module(x), module.reference(x))


@pytest.fixture(scope="module")
def token_embedding(gguf_tensors) -> tuple[GroupQuant, torch.Tensor]:
    """The embedded model's Q8_0 token embedding [49152, 576]: decoded, and dequantized by gguf."""
    tensor = gguf_tensors["token_embd.weight"]
    assert tensor.tensor_type == T.Q8_0
    return decoded(gguf_tensors, "token_embd.weight"), torch.from_numpy(gguf.dequantize(tensor.data, T.Q8_0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("source", ["random", "gguf-q8_0"])
def test_int8_embedding_lookup_and_tied_projection_match_dense(token_embedding, source, dtype):
    """Rows: within half an int8 step of the dense table (rowmax / 254; Q8_0's group-32 scales are
    requantized to one per row), plus bf16 rounding of scale and product (2 * 2^-8 of the row max).
    Projection (the tied LM head): x @ W.T against the module's own weight, the linear tolerances."""
    if source == "random":
        dense = torch.randn(1000, 64, generator=torch.Generator().manual_seed(5))
        gq = quantize_int8(dense)
    else:
        gq, dense = token_embedding
    module = Int8Embedding(gq, dtype)
    vocab, dim = dense.shape
    assert (module.num_embeddings, module.embedding_dim) == (vocab, dim)
    ids = torch.tensor([[0, 1, vocab - 1], [17, 17, vocab // 2]])
    rows = module(ids)
    assert rows.dtype == dtype and rows.shape == (2, 3, dim)
    rowmax = dense[ids].abs().amax(-1, keepdim=True)
    rounding = 2 * BF16_ROUNDING if dtype == torch.bfloat16 else 1e-6
    assert ((rows.float() - dense[ids]).abs() <= rowmax * (1 / 254 + rounding) * (1 + 1e-5)).all()
    assert torch.equal(rows[1, 0], rows[1, 1])
    x = torch.randn(7, dim, generator=torch.Generator().manual_seed(6)).to(dtype)
    logits = module.project(x)
    assert logits.dtype == dtype and logits.shape == (7, vocab)
    err = rel_err(logits, x.float() @ module.dequantize().T)
    print(f"int8 embedding {source} project {str(dtype)[6:]}: relative error {err:.2e}")
    assert err <= TOLERANCE[dtype]
