"""Weight-only 4-bit group-wise matmul: a Triton kernel, its torch reference, a dispatch, and the packing.

Codes are packed two to a byte along the input dimension (`pack_int4`: low nibble = even column,
high nibble = odd column), and w[n, k] = code * scale[n, k // group] + offset[n, k // group]. The
kernel tiles (BLOCK_M, BLOCK_N, BLOCK_K); each weight tile is unpacked and dequantized in fp32
(every byte is read for its two columns, and scale/offset are gathered per column, so any group
size works), rounded to the activation dtype (as the reference's weight would be), and multiplied
into an fp32 accumulator.

Block sizes are a fixed heuristic (no GPU was at hand to autotune on); decode (M = 1) pads its row
to BLOCK_M = 16, the smallest tile `tl.dot` takes. Under TRITON_INTERPRET=1 the dot operands are
widened to fp32 after that rounding (the interpreter keeps bf16 as raw uint16 and cannot multiply
it), and its fp32 -> bf16 casts truncate where the GPU rounds to nearest: interpreted bf16 weights
and outputs may each be one bf16 step off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from agent_kernels.dispatch import interpreting, use_triton


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] uint8 codes 0..15 -> [N, K // 2] uint8, column 2j in the low nibble of byte j, 2j + 1 high."""
    if codes.dtype != torch.uint8 or codes.dim() != 2 or codes.shape[1] % 2:
        raise ValueError(f"pack_int4 takes [N, K] uint8 codes with K even, got {codes.dtype} {tuple(codes.shape)}")
    if codes.numel() and codes.max() > 15:
        raise ValueError(f"4-bit codes must be 0..15, got a {codes.max().item()}")
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """[N, K // 2] uint8 -> the [N, K] uint8 codes `pack_int4` packed."""
    rows, half = packed.shape
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).view(rows, 2 * half)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group: int) -> torch.Tensor:
    """The fp32 weight [N, K] the packed codes stand for."""
    codes = unpack_int4(packed).float()
    rows, cols = codes.shape
    grouped = codes.view(rows, cols // group, group) * scale.float()[:, :, None] + offset.float()[:, :, None]
    return grouped.view(rows, cols)


def reference_int4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                          group: int) -> torch.Tensor:
    """Plain torch, the definition of correct: unpack, dequantize, round the weight to x's dtype (as the
    kernel does before its dot), matmul in fp32, cast to x's dtype."""
    w = dequantize_int4(packed, scale, offset, group).to(x.dtype)
    return F.linear(x.float(), w.float()).to(x.dtype)


def int4_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                group: int) -> torch.Tensor:
    """y [M, N] = x [M, K] @ w.T for the packed 4-bit weight w [N, K] (see the module docstring)."""
    rows, half = packed.shape
    k = 2 * half
    if packed.dtype != torch.uint8 or x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"x {tuple(x.shape)} does not chain with packed {packed.dtype} {tuple(packed.shape)} "
                         f"(want x [M, K], packed uint8 [N, K // 2])")
    if group <= 0 or k % group or scale.shape != (rows, k // group) or offset.shape != scale.shape:
        raise ValueError(f"group {group} with scale {tuple(scale.shape)} / offset {tuple(offset.shape)} does not "
                         f"fit a [{rows}, {k}] weight (want group dividing K and both [N, K // group])")
    if use_triton(x):
        return _triton_int4_matmul(x, packed, scale, offset, group)
    return reference_int4_matmul(x, packed, scale, offset, group)


@triton.jit
def _int4_matmul_kernel(x_ptr, p_ptr, s_ptr, o_ptr, y_ptr, M, N, K, GROUP,
                        stride_xm, stride_xk, stride_pn, stride_pk, stride_sn, stride_sg,
                        stride_on, stride_og, stride_ym, stride_yn,
                        DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        k_ok = kk < K
        a = tl.load(x_ptr + rows[:, None] * stride_xm + kk[None, :] * stride_xk,
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        # [BLOCK_K, BLOCK_N] tiles, read transposed so the dot needs no transpose.
        wmask = k_ok[:, None] & col_ok[None, :]
        byte = tl.load(p_ptr + cols[None, :] * stride_pn + (kk // 2)[:, None] * stride_pk, mask=wmask, other=0)
        code = (byte.to(tl.int32) >> ((kk % 2) * 4)[:, None]) & 0xF
        g = kk // GROUP
        s = tl.load(s_ptr + cols[None, :] * stride_sn + g[:, None] * stride_sg, mask=wmask, other=0.0)
        o = tl.load(o_ptr + cols[None, :] * stride_on + g[:, None] * stride_og, mask=wmask, other=0.0)
        b = (code.to(tl.float32) * s.to(tl.float32) + o.to(tl.float32)).to(a.dtype)
        if DOT_FP32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn,
             acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def _blocks(m: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K), as in agent_kernels/scaled_matmul.py."""
    if m <= 16:
        return 16, 32, 64
    if m <= 64:
        return 32, 64, 64
    return 64, 64, 64


def _triton_int4_matmul(x, packed, scale, offset, group):
    m, k = x.shape
    n = packed.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:  # an empty grid is not a launch
        return y
    block_m, block_n, block_k = _blocks(m)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _int4_matmul_kernel[grid](
        x, packed, scale, offset, y, m, n, k, group,
        x.stride(0), x.stride(1), packed.stride(0), packed.stride(1), scale.stride(0), scale.stride(1),
        offset.stride(0), offset.stride(1), y.stride(0), y.stride(1),
        DOT_FP32=interpreting(), PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )
    return y
