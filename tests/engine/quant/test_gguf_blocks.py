"""GGUF block decoding (engine/quant/gguf_blocks.py) against the `gguf` package, and GroupQuant's row operations.

Tolerance: none. Every decodable format is "f16 scale times a small integer code plus an f16-derived
offset", products that are exact in float32, so our decode must equal `gguf.dequantize` bit for bit.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from engine.quant.gguf_blocks import decode_blocks
from engine.quant.group_quant import GroupQuant

# How many leading float16 fields each block starts with (d; d and m / dmin); the rest is random bytes,
# which are valid codes (and, for Q4_K, valid packed 6-bit scales/mins) whatever their value.
F16_FIELDS = {T.Q4_0: 1, T.Q4_1: 2, T.Q4_K: 2, T.Q8_0: 1}


def random_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite float16 scales of either sign, |x| in [2^-12, 2), with some exact zeros and subnormals."""
    values = rng.uniform(0.5, 1.0, n) * 2.0 ** rng.integers(-12, 1, n) * rng.choice([-1.0, 1.0], n)
    values[rng.random(n) < 0.02] = 0.0
    values[rng.random(n) < 0.02] = 2.0**-20  # a float16 subnormal
    return values.astype(np.float16)


def random_blocks(qtype: T, rows: int, cols: int, seed: int) -> np.ndarray:
    """Random valid block bytes of a [rows, cols] tensor, shaped as GGUFReader gives them: [rows, row_bytes]."""
    rng = np.random.default_rng(seed)
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    n = rows * cols // block_elems
    blocks = rng.integers(0, 256, (n, block_bytes), dtype=np.uint8)
    for field in range(F16_FIELDS[qtype]):
        blocks[:, 2 * field:2 * field + 2] = random_f16(rng, n).view(np.uint8).reshape(n, 2)
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("qtype", sorted(F16_FIELDS, key=int), ids=lambda t: t.name)
@pytest.mark.parametrize("rows, cols", [(1, 256), (16, 512), (48, 768)])
def test_random_blocks_decode_exactly_like_gguf(qtype, rows, cols):
    for seed in range(3):
        data = random_blocks(qtype, rows, cols, seed)
        gq = decode_blocks(data, qtype, rows, cols)
        assert gq is not None and gq.shape == (rows, cols) and gq.group == 32
        assert gq.bits == (8 if qtype == T.Q8_0 else 4)
        assert gq.unsigned == (qtype != T.Q8_0)
        expected = gguf.dequantize(data, qtype)
        ours = gq.dequantize().numpy()
        assert expected.shape == ours.shape
        mismatches = int((ours != expected).sum())
        assert mismatches == 0, f"{qtype.name} seed {seed}: {mismatches} values differ from gguf.dequantize"


def test_every_quantized_tensor_of_the_embedded_gguf_decodes_exactly(gguf_tensors):
    seen: dict[str, int] = {}
    for tensor in gguf_tensors.values():
        if tensor.tensor_type in (T.F32, T.F16):
            continue
        rows, cols = (int(n) for n in reversed(tensor.shape))
        gq = decode_blocks(tensor.data, tensor.tensor_type, rows, cols)
        assert gq is not None, f"{tensor.name} ({tensor.tensor_type.name}) was not decoded"
        expected = gguf.dequantize(tensor.data, tensor.tensor_type)
        assert np.array_equal(gq.dequantize().numpy(), expected), f"{tensor.name} differs from gguf.dequantize"
        seen[tensor.tensor_type.name] = seen.get(tensor.tensor_type.name, 0) + 1
    # SmolLM2-135M Q4_1: 30 layers x 7 matrices in Q4_1, the (tied) token embedding in Q8_0.
    assert seen == {"Q4_1": 210, "Q8_0": 1}


@pytest.mark.parametrize("qtype", [T.Q5_0, T.Q5_1, T.Q6_K, T.Q5_K, T.Q8_K, T.F16, T.F32, T.BF16],
                         ids=lambda t: t.name)
def test_other_types_are_not_decoded(qtype):
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    data = np.zeros((4, 256 // block_elems * block_bytes), dtype=np.uint8)
    assert decode_blocks(data, qtype, 4, 256) is None


def _weight(rows: int = 6, cols: int = 64, with_offset: bool = True, seed: int = 0) -> GroupQuant:
    g = torch.Generator().manual_seed(seed)
    offset = torch.randn(rows, cols // 32, generator=g) if with_offset else None
    codes = torch.randint(0, 16, (rows, cols), dtype=torch.uint8, generator=g)
    return GroupQuant(codes, torch.rand(rows, cols // 32, generator=g), offset, 32, 4)


def test_group_quant_dequantize_follows_its_formula():
    gq = _weight()
    col_group = torch.arange(64) // 32
    expected = gq.codes.float() * gq.scale[:, col_group] + gq.offset[:, col_group]
    assert torch.equal(gq.dequantize(), expected)
    signed = GroupQuant(gq.codes.to(torch.int8) - 8, gq.scale, None, 32, 4)
    assert not signed.unsigned
    assert torch.equal(signed.dequantize(), (gq.codes.float() - 8) * gq.scale[:, col_group])


@pytest.mark.parametrize("with_offset", [True, False])
def test_rows_selects_and_permutes_like_the_dense_weight(with_offset):
    gq = _weight(with_offset=with_offset)
    dense = gq.dequantize()
    permutation = torch.tensor([5, 3, 1, 0, 2, 4])
    assert torch.equal(gq.rows(permutation).dequantize(), dense[permutation])
    assert torch.equal(gq.rows(slice(2, 5)).dequantize(), dense[2:5])
    assert gq.rows(slice(2, 5)).shape == (3, 64)


def test_cat_stacks_output_rows_and_refuses_mixed_formats():
    a, b = _weight(rows=4, seed=1), _weight(rows=2, seed=2)
    whole = GroupQuant.cat([a, b])
    assert whole.shape == (6, 64) and (whole.group, whole.bits) == (32, 4)
    assert torch.equal(whole.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    with pytest.raises(ValueError, match="different formats"):
        GroupQuant.cat([a, _weight(with_offset=False)])
    with pytest.raises(ValueError, match="different formats"):
        GroupQuant.cat([a, GroupQuant(a.codes, a.scale.repeat_interleave(2, 1), a.offset.repeat_interleave(2, 1), 16, 4)])


def test_inconsistent_shapes_are_refused():
    codes = torch.zeros(4, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match="whole number of groups of 48"):
        GroupQuant(codes, torch.ones(4, 1), None, 48, 4)
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        GroupQuant(codes, torch.ones(4, 1), None, 32, 4)
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        GroupQuant(codes, torch.ones(4, 2), torch.zeros(2, 2), 32, 4)
