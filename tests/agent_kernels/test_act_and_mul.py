"""The Triton gated activation (silu / gelu_tanh times up) against its plain-torch reference.

On CPU the kernel runs in Triton's interpreter (agent_kernels.dispatch.forced). The kernel rounds once, the
reference after the activation and after the product. Tolerances: fp32 1e-5, fp16 5e-3, bf16 2e-2
(the interpreter also truncates fp32 -> bf16).
"""

from __future__ import annotations

import pytest
import torch

from agent_kernels import act_and_mul as kernel
from agent_kernels import dispatch

TOL = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
}
DTYPES = list(TOL)
ACTIVATIONS = ["silu", "gelu_tanh"]


def _check(x: torch.Tensor, activation: str) -> None:
    expected = kernel.reference_act_and_mul(x, activation)
    with dispatch.forced():
        got = kernel.act_and_mul(x, activation)
    assert got.dtype == x.dtype and got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, **TOL[x.dtype])


@pytest.mark.parametrize("tokens, inter", [(1, 64), (7, 37), (33, 96)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_triton_equals_reference(tokens, inter, dtype, activation):
    x = (torch.randn(tokens, 2 * inter, generator=torch.Generator().manual_seed(tokens)) * 3).to(dtype)
    _check(x, activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_large_magnitudes_do_not_overflow(activation):
    gate = torch.tensor([-90.0, -30.0, -8.0, -1e-3, 0.0, 1e-3, 8.0, 30.0, 90.0])
    x = torch.cat((gate, torch.full_like(gate, 1.5)))[None]
    _check(x, activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_strided_views_leading_dims_and_several_column_blocks(activation):
    gen = torch.Generator().manual_seed(1)
    wide = torch.randn(2, 3, 2 * 37 + 6, generator=gen, dtype=torch.bfloat16)
    _check(wide[..., 4 : 4 + 2 * 37], activation)  # row stride 80, leading dims [2, 3]
    _check(torch.randn(2 * 1100, 2, generator=gen).t(), activation)  # column stride 2, two blocks of 1024


def test_unknown_activation_is_rejected():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="relu"):
        kernel.act_and_mul(x, "relu")
    with dispatch.forced(), pytest.raises(ValueError, match="relu"):
        kernel.act_and_mul(x, "relu")


def test_cpu_tensors_run_the_reference_unless_forced(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path ran on CPU without forced()")

    monkeypatch.setattr(kernel, "triton_act_and_mul", refuse)
    x = torch.randn(7, 74, generator=torch.Generator().manual_seed(2))
    for activation in ACTIVATIONS:
        assert torch.equal(kernel.act_and_mul(x, activation), kernel.reference_act_and_mul(x, activation))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_equals_reference_on_cuda(dtype):
    for tokens, inter in [(1, 64), (7, 37), (33, 5632)]:
        x = (torch.randn(tokens, 2 * inter, device="cuda") * 3).to(dtype)
        for activation in ACTIVATIONS:
            got = kernel.act_and_mul(x, activation)
            torch.testing.assert_close(got, kernel.reference_act_and_mul(x, activation), **TOL[dtype])
