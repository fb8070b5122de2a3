"""Decode GGUF quantized blocks (Q4_0, Q4_1, Q4_K, Q8_0) into GroupQuant codes and scales, exactly.

Every one of these formats is "codes times a per-32-column scale plus an offset", so it maps onto
a group-32 GroupQuant without loss: Q4_0 w = d*(q-8); Q4_1 w = d*q + m; Q4_K w = (d*sc)*q - dmin*mn
with 6-bit sub-block scales; Q8_0 w = d*q (signed). Block layouts follow ggml (`gguf.quants` holds
the reference dequantization; tests compare against it). Other types return None and are
dequantized by `gguf` instead.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import Q4_K

from engine.quant.group_quant import GroupQuant

GROUP = 32
DECODABLE = frozenset({T.Q4_0, T.Q4_1, T.Q4_K, T.Q8_0})


def decode_blocks(data: np.ndarray, qtype: T, rows: int, cols: int) -> GroupQuant | None:
    """The GroupQuant for a [rows, cols] tensor stored as GGUF blocks `data`, or None if not decodable."""
    if qtype not in DECODABLE:
        return None
    blocks = np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)
    if qtype == T.Q8_0:
        return _q8_0(blocks, rows, cols)
    if qtype == T.Q4_K:
        return _q4_k(blocks, rows, cols)
    return _q4_0_1(blocks, rows, cols, with_min=qtype == T.Q4_1)


def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)[..., 0]


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., 16 bytes] -> [..., 32 codes]: low nibbles are elements 0-15, high nibbles 16-31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _q4_0_1(blocks: np.ndarray, rows: int, cols: int, with_min: bool) -> GroupQuant:
    head = 4 if with_min else 2
    b = blocks.reshape(rows, cols // GROUP, head + 16)
    d = _f16(b[..., 0:2])
    codes = _nibbles(b[..., head:]).reshape(rows, cols)
    offset = _f16(b[..., 2:4]) if with_min else -8.0 * d
    return _group_quant(codes, d, offset, bits=4)


def _q8_0(blocks: np.ndarray, rows: int, cols: int) -> GroupQuant:
    b = blocks.reshape(rows, cols // GROUP, 34)
    d = _f16(b[..., 0:2])
    codes = np.ascontiguousarray(b[..., 2:]).view(np.int8).reshape(rows, cols)
    return GroupQuant(torch.from_numpy(codes.copy()), torch.from_numpy(d), None, GROUP, 8)


def _q4_k(blocks: np.ndarray, rows: int, cols: int) -> GroupQuant:
    b = blocks.reshape(rows * (cols // 256), 144)
    d = _f16(b[:, 0:2])[:, None]
    dmin = _f16(b[:, 2:4])[:, None]
    sc, mn = Q4_K.get_scale_min(b[:, 4:16])  # [n, 8] each, 6-bit
    qs = b[:, 16:].reshape(-1, 4, 32)  # four 64-element chunks: low nibbles then high nibbles
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(rows, cols)
    scale = (d * sc.astype(np.float32)).reshape(rows, -1)
    offset = (-dmin * mn.astype(np.float32)).reshape(rows, -1)
    return _group_quant(codes, scale, offset, bits=4)


def _group_quant(codes: np.ndarray, scale: np.ndarray, offset: np.ndarray, bits: int) -> GroupQuant:
    return GroupQuant(torch.from_numpy(np.ascontiguousarray(codes, dtype=np.uint8)),
                      torch.from_numpy(np.ascontiguousarray(scale, dtype=np.float32)),
                      torch.from_numpy(np.ascontiguousarray(offset, dtype=np.float32)), GROUP, bits)
