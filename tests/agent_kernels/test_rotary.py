"""The Triton rotary embedding against its plain-torch reference, with llama3-scaled tables.

On CPU the kernel runs in Triton's interpreter (agent_kernels.dispatch.forced). The kernel rounds once, the
reference after each of its three ops in x's dtype. Tolerances: fp32 1e-5, fp16 5e-3, bf16 2e-2
(the interpreter also truncates fp32 -> bf16).
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from agent_kernels import dispatch
from agent_kernels import rotary as kernel

TOL = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
}
DTYPES = list(TOL)
MAX_POSITIONS = 512
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


def _llama3_tables(head_dim: int, dtype: torch.dtype, device: str = "cpu", signed: bool = True):
    """cos/sin [MAX_POSITIONS, head_dim] built as RotaryTable.build does (sin signed for rotate_half)."""
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                         max_position_embeddings=MAX_POSITIONS, rope_scaling=dict(LLAMA3))
    inv_freq, scaling = ROPE_INIT_FUNCTIONS["llama3"](config, device)
    positions = torch.arange(MAX_POSITIONS, device=device, dtype=torch.int64).float()
    freqs = positions[:, None] * inv_freq.float()[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = (emb.cos() * scaling).to(dtype)
    sin = (emb.sin() * scaling).to(dtype)
    if signed:
        half = head_dim // 2
        sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
    return cos, sin


def _positions(tokens: int, device: str = "cpu", seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, MAX_POSITIONS, (tokens,), generator=gen).to(device)


def _check(x, positions, cos, sin) -> None:
    expected = kernel.reference_apply_rotary(x, positions, cos, sin)
    with dispatch.forced():
        got = kernel.apply_rotary(x, positions, cos, sin)
    assert got.dtype == x.dtype and got.shape == x.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, **TOL[x.dtype])


@pytest.mark.parametrize("tokens", [1, 7, 33])
@pytest.mark.parametrize("heads, head_dim", [(1, 64), (3, 80), (5, 96)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_equals_reference(tokens, heads, head_dim, dtype):
    cos, sin = _llama3_tables(head_dim, dtype)
    gen = torch.Generator().manual_seed(tokens)
    x = torch.randn(tokens, heads, head_dim, generator=gen).to(dtype)
    _check(x, _positions(tokens), cos, sin)


@pytest.mark.parametrize("dtype", DTYPES)
def test_q_and_k_slices_of_a_fused_qkv_projection(dtype):
    tokens, heads, kv_heads, head_dim = 7, 5, 1, 80
    cos, sin = _llama3_tables(head_dim, dtype)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=torch.Generator().manual_seed(3)).to(dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    assert q.stride(0) != heads * head_dim
    positions = torch.arange(100, 100 + tokens)
    _check(q, positions, cos, sin)
    _check(k, positions, cos, sin)


def test_transposed_view_and_int32_positions():
    cos, sin = _llama3_tables(64, torch.float32)
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(4)).transpose(0, 1)  # [7, 3, 64], head-major
    _check(x, _positions(7).to(torch.int32), cos, sin)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_is_hf_rotate_half_bit_for_bit(dtype):
    """The signed-sin table with roll is exactly HF's x * cos + rotate_half(x) * sin."""
    cos, sin = _llama3_tables(96, dtype)
    _, plain_sin = _llama3_tables(96, dtype, signed=False)
    x = torch.randn(7, 3, 96, generator=torch.Generator().manual_seed(5)).to(dtype)
    positions = _positions(7)
    # HF takes q, k as [batch, heads, seq, dim] and cos/sin as [batch, seq, dim].
    hf_q, _ = apply_rotary_pos_emb(x.transpose(0, 1)[None], x.transpose(0, 1)[None], cos[positions][None],
                                   plain_sin[positions][None])
    assert torch.equal(kernel.reference_apply_rotary(x, positions, cos, sin), hf_q[0].transpose(0, 1))


def test_cpu_tensors_run_the_reference_unless_forced(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path ran on CPU without forced()")

    monkeypatch.setattr(kernel, "triton_apply_rotary", refuse)
    cos, sin = _llama3_tables(64, torch.float32)
    x = torch.randn(7, 3, 64, generator=torch.Generator().manual_seed(6))
    positions = _positions(7)
    assert torch.equal(kernel.apply_rotary(x, positions, cos, sin),
                       kernel.reference_apply_rotary(x, positions, cos, sin))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_equals_reference_on_cuda(dtype):
    for tokens, heads, head_dim in [(1, 1, 64), (7, 3, 80), (33, 32, 128)]:
        cos, sin = _llama3_tables(head_dim, dtype, device="cuda")
        qkv = torch.randn(tokens, (heads + 2) * head_dim, device="cuda").to(dtype)
        x = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
        positions = _positions(tokens, device="cuda")
        got = kernel.apply_rotary(x, positions, cos, sin)
        torch.testing.assert_close(got, kernel.reference_apply_rotary(x, positions, cos, sin), **TOL[dtype])
