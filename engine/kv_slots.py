"""SlotKVCache: a static, preallocated KV cache with one contiguous slot per running sequence."""

from __future__ import annotations

import torch


class SlotKVCache:
    """Keys and values of every layer, laid out [slot, kv_head, position, head_dim].

    Allocated once for `num_slots` sequences of up to `max_len` tokens, so decode steps write in
    place and allocate nothing. (The paged block cache of the serving engine replaces the slot
    layout; the attention reference keeps the same contract.)
    """

    def __init__(
        self,
        num_layers: int,
        num_slots: int,
        max_len: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_slots, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.num_slots = num_slots
        self.max_len = max_len

    def fits(self, num_slots: int, max_len: int) -> bool:
        return num_slots <= self.num_slots and max_len <= self.max_len

    @staticmethod
    def bytes_needed(
        num_layers: int, num_slots: int, max_len: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        itemsize = torch.empty(0, dtype=dtype).element_size()
        return 2 * num_layers * num_slots * num_kv_heads * max_len * head_dim * itemsize
