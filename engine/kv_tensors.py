"""KVTensors: the paged KV cache memory, one [num_blocks, block_size, kv_heads, head_dim] pair per layer."""

from __future__ import annotations

import torch


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
    ) -> None:
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.num_blocks = num_blocks
        self.block_size = block_size

    @staticmethod
    def bytes_per_block(
        num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        itemsize = torch.empty(0, dtype=dtype).element_size()
        return 2 * num_layers * block_size * num_kv_heads * head_dim * itemsize
