"""The C++ paged decode-attention kernel against its plain-torch reference (and the engine's path).

Built on first use (~25 s once per machine, then cached by torch.utils.cpp_extension).
"""

from __future__ import annotations

import pytest
import torch

from agent_kernels import cpu_decode_attention as kernel

BLOCK = 16


@pytest.fixture(scope="module", autouse=True)
def built():
    assert kernel.load(), "the C++ kernel did not build (gcc and ninja are project dependencies)"


def _case(lengths: list[int], heads: int, kv_heads: int, dim: int = 64, consecutive: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    seqs = len(lengths)
    blocks = max(-(-n // BLOCK) for n in lengths)
    pool = seqs * blocks + 3
    cache_k = torch.randn(pool, BLOCK, kv_heads, dim, generator=gen)
    cache_v = torch.randn(pool, BLOCK, kv_heads, dim, generator=gen)
    order = torch.arange(pool) if consecutive else torch.randperm(pool, generator=gen)
    table = order[: seqs * blocks].view(seqs, blocks).contiguous()
    return torch.randn(seqs, heads, dim, generator=gen), cache_k, cache_v, table, torch.tensor(lengths)


# 1 token; a block boundary (16, 17, 32, 33); odd lengths; uneven batches; a long one.
@pytest.mark.parametrize("lengths", [[1], [16], [17, 32, 33], [5, 300, 2], [577]])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (9, 3), (8, 1)])  # MHA, GQA, MQA
@pytest.mark.parametrize("window, softcap", [(None, None), (7, None), (None, 30.0), (20, 5.0)])
def test_kernel_equals_reference(lengths, heads, kv_heads, window, softcap):
    q, k, v, table, lens = _case(lengths, heads, kv_heads)
    expected = kernel.reference_decode_attention(q, k, v, table, lens, 0.125, window, softcap)
    got = kernel.decode_attention(q, k, v, table, lens, 0.125, window, softcap)
    torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-5)


# 64, 128, 256: the AVX-512 path where built for it; 80 and 8: the portable loop. Lengths around the
# chunk split (one sequence on two threads: 129 and 257 keys) and a masked softmax tail (of 16 lanes).
@pytest.mark.parametrize("dim", [8, 64, 80, 128, 256])
@pytest.mark.parametrize("lengths", [[3], [129], [257, 20], [600]])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_kernel_equals_reference_for_every_head_size(dim, lengths, cache_dtype):
    q, k, v, table, lens = _case(lengths, 8, 2, dim=dim, seed=dim)
    k, v = k.to(cache_dtype), v.to(cache_dtype)
    expected = kernel.reference_decode_attention(q, k.float(), v.float(), table, lens, dim**-0.5, None, None)
    got = kernel.decode_attention(q, k, v, table, lens, dim**-0.5, None, None)
    torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-5)


def test_kernel_is_the_same_on_one_thread_and_two():
    """The chunk split follows the thread count; the result may differ only by float rounding."""
    q, k, v, table, lens = _case([600, 37], 9, 3, seed=5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel.decode_attention(q, k, v, table, lens, 0.125, None, None)
        torch.set_num_threads(2)
        two = kernel.decode_attention(q, k, v, table, lens, 0.125, None, None)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lengths", [[1], [17, 33], [5, 300, 2]])
@pytest.mark.parametrize("window, softcap", [(None, None), (20, 5.0)])
def test_kernel_reads_bf16_caches_as_exactly_widened_f32(lengths, window, softcap):
    """A bf16 cache is widened to f32 as read: the result equals the f32 kernel on the widened cache."""
    q, k, v, table, lens = _case(lengths, 9, 3)
    k16, v16 = k.bfloat16(), v.bfloat16()
    expected = kernel.decode_attention(q, k16.float(), v16.float(), table, lens, 0.125, window, softcap)
    got = kernel.decode_attention(q, k16, v16, table, lens, 0.125, window, softcap)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    reference = kernel.reference_decode_attention(q, k16.float(), v16.float(), table, lens, 0.125, window, softcap)
    torch.testing.assert_close(got, reference, rtol=2e-5, atol=2e-5)


def test_kernel_equals_the_engine_torch_path():
    from engine.attention import _decode_attention

    q, k, v, table, lens = _case([40, 200, 3], 9, 3, consecutive=True, seed=3)
    first = table[:, 0].clone()
    expected = _decode_attention(q, k, v, table, lens, first, 0.2, None, None)
    torch.testing.assert_close(kernel.decode_attention(q, k, v, table, lens, 0.2, None, None), expected,
                               rtol=2e-5, atol=2e-5)


def test_kernel_under_torch_compile_equals_eager():
    compiled = torch.compile(kernel.decode_attention, fullgraph=True, dynamic=True)
    q, k, v, table, lens = _case([9, 40], 6, 2, dim=32, seed=5)
    torch.testing.assert_close(compiled(q, k, v, table, lens, 0.3, 16, None),
                               kernel.decode_attention(q, k, v, table, lens, 0.3, 16, None))


def test_kernel_applies_to_f32_queries_over_f32_or_bf16_cpu_caches():
    q, k, _, _, _ = _case([3], 4, 2)
    assert kernel.applies(q, k)
    assert kernel.applies(q, k.bfloat16())
    assert not kernel.applies(q.bfloat16(), k.bfloat16())
    assert not kernel.applies(q, k.half())


def test_bad_inputs_are_refused_with_a_message():
    q, k, v, table, lens = _case([3], 4, 2)
    with pytest.raises(RuntimeError, match="float32"):
        kernel.decode_attention(q.double(), k, v, table, lens, 0.1, None, None)
