"""Weight-only 8-bit matmul with one scale per output row: a Triton kernel, its torch reference, a dispatch.

y = x @ (codes * scale[:, None]).T (+ bias) for int8 or float8_e4m3fn codes. The kernel tiles
(BLOCK_M, BLOCK_N, BLOCK_K), converts each code tile to the activation dtype on load (exact: int8
and e4m3 values fit fp16/bf16), accumulates x @ codes.T in fp32 and applies the row scales to the
accumulator once, at the end: the weight is never dequantized in memory.

Block sizes are a fixed heuristic (no GPU was at hand to autotune on). Decode (M = 1) pads its
row to BLOCK_M = 16, the smallest tile `tl.dot` takes. Triton's interpreter keeps bf16 as raw
uint16 and cannot multiply it, so under TRITON_INTERPRET=1 both dot operands are widened to fp32
(exactly); its fp32 -> bf16 casts truncate where the GPU rounds to nearest, so interpreted bf16
outputs may be one bf16 step off. fp8 codes need a GPU of compute capability 8.9 or newer; older
ones run the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from agent_kernels.dispatch import interpreting, use_triton

CODE_DTYPES = (torch.int8, torch.float8_e4m3fn)


def reference_scaled_matmul(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch, the definition of correct: dequantize to fp32, matmul in fp32, cast to x's dtype."""
    w = weight.float() * scale.float()[:, None]
    return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)


def scaled_matmul(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ (weight [N, K] * scale [N, None]).T (+ bias [N]), in x's dtype."""
    if weight.dtype not in CODE_DTYPES:
        raise ValueError(f"weight codes must be int8 or float8_e4m3fn, got {weight.dtype}")
    if x.dim() != 2 or weight.shape[1] != x.shape[1] or scale.shape != (weight.shape[0],):
        raise ValueError(f"shapes do not chain: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"scale {tuple(scale.shape)} (want [M, K], [N, K], [N])")
    if use_triton(x) and _fp8_ok(x, weight):
        return _triton_scaled_matmul(x, weight, scale, bias)
    return reference_scaled_matmul(x, weight, scale, bias)


def _fp8_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Triton converts e4m3 codes only on compute capability >= 8.9 (Ada, Hopper)."""
    if weight.dtype != torch.float8_e4m3fn or not x.is_cuda:
        return True
    return torch.cuda.get_device_capability(x.device) >= (8, 9)


@triton.jit
def _scaled_matmul_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr, M, N, K,
                          stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
                          HAS_BIAS: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + ks) < K
        a = tl.load(x_ptr + rows[:, None] * stride_xm + (k0 + ks)[None, :] * stride_xk,
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        # [BLOCK_K, BLOCK_N]: the codes' tile read transposed, so the dot needs no transpose.
        codes = tl.load(w_ptr + cols[None, :] * stride_wn + (k0 + ks)[:, None] * stride_wk,
                        mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        b = codes.to(tl.float32).to(a.dtype)  # via fp32: the interpreter's int8 -> bf16 is wrong
        if DOT_FP32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    acc = acc * tl.load(scale_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn,
             acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def _blocks(m: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K): the smallest row tile that covers M (16 at least), narrower
    column tiles for decode so a GEMV still spreads over many programs."""
    if m <= 16:
        return 16, 32, 64
    if m <= 64:
        return 32, 64, 64
    return 64, 64, 64


def _triton_scaled_matmul(x, weight, scale, bias):
    m, k = x.shape
    n = weight.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:  # an empty grid is not a launch
        return y
    block_m, block_n, block_k = _blocks(m)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _scaled_matmul_kernel[grid](
        x, weight, scale, bias if bias is not None else scale, y, m, n, k,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None, DOT_FP32=interpreting(),
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )
    return y
