"""KVTensors: the paged KV cache memory, one [num_blocks, block_size, kv_heads, head_dim] pair per layer."""

from __future__ import annotations

import numpy as np
import torch

_KV_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16, "fp8": torch.float8_e4m3fn}
KV_CACHE_DTYPES = ("auto", *_KV_DTYPES)
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite e4m3 value: stores saturate there (a plain cast would give NaN)


def resolve_kv_dtype(name: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """`auto`: the model's dtype on GPU; on CPU bf16 for a bf16 model, else f32. (CPU attention computes
    in f32 whatever the cache holds: the decode kernel widens bf16 keys as it reads them, so a bf16
    cache halves the bytes a step streams at the same arithmetic; half-precision attention itself is
    2-4x slower than f32 on CPU: one decode query, 200 keys, 52 vs 17 us per layer.)
    `fp8`: keys and values stored as float8 e4m3 (scale 1, saturating), half the bytes of bf16."""
    if name == "auto":
        if device.type == "cpu":
            return torch.bfloat16 if model_dtype == torch.bfloat16 else torch.float32
        return model_dtype
    if name not in _KV_DTYPES:
        raise ValueError(f"invalid kv_cache_dtype {name!r}: expected one of {', '.join(KV_CACHE_DTYPES)}")
    return _KV_DTYPES[name]


def compute_dtype(kv_dtype: torch.dtype, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype attention computes in: f32 on CPU; on GPU the cache's, or the model's for an fp8 cache."""
    if device.type == "cpu":
        return torch.float32
    return model_dtype if kv_dtype == FP8 else kv_dtype


class KVTensors:
    """Keys and values of every layer, addressed by flat slot = block * block_size + offset.

    The block pool (`engine/kv_cache.py`, plain Python) decides which blocks a request owns; this
    class only holds the memory. Allocated once; steps write in place.
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        layer_devices: list[torch.device] | None = None,
    ) -> None:
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        devices = layer_devices or [device] * num_layers  # each layer's memory lives with its weights
        self.keys = [_zeros(shape, dtype, d) for d in devices]
        self.values = [_zeros(shape, dtype, d) for d in devices]
        self.num_blocks = num_blocks
        self.block_size = block_size

    @staticmethod
    def bytes_per_block(
        num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        itemsize = torch.empty(0, dtype=dtype).element_size()
        return 2 * num_layers * block_size * num_kv_heads * head_dim * itemsize


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeroed memory. On CPU it comes from calloc (numpy), so the OS hands out zero pages as they
    are first written: resident memory grows with the tokens cached, not with the pool's size.
    (Zeros matter: padded attention reads unused slots and multiplies them by 0, and 0 * NaN = NaN.)"""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    raw = np.zeros(shape, dtype={1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize])
    return torch.from_numpy(raw).view(dtype)
