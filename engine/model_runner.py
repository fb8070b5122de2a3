"""ModelRunner: owns the model module and its KV cache, runs forwards and sampling on one device."""

from __future__ import annotations

import torch

from engine.errors import InvalidRequestError
from engine.forward_batch import ForwardBatch
from engine.kv_slots import SlotKVCache
from engine.loader import LoadedModel
from engine.sampler import Sampler, SamplerOutput, SamplingState

_ROUND = 256  # cache lengths are rounded up so that similar requests reuse one allocation


class ModelRunner:
    """Runs the model over flattened batches; (re)allocates the slot cache when a batch needs more."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model = loaded.module
        self.device = loaded.device
        self.sampler = Sampler()
        self.kv: SlotKVCache | None = None

    def reserve(self, num_slots: int, max_len: int) -> None:
        """Make sure `num_slots` sequences of up to `max_len` tokens fit in the KV cache."""
        if not getattr(self.model, "uses_slot_cache", True):
            return
        if max_len > self.loaded.context_length:
            raise InvalidRequestError(f"{max_len} tokens exceed the context length {self.loaded.context_length}")
        if self.kv is not None and self.kv.fits(num_slots, max_len):
            return
        spec = self.model.spec
        length = min(self.loaded.context_length, -(-max_len // _ROUND) * _ROUND)
        self.kv = None  # free the old cache before allocating the new one
        self.kv = SlotKVCache(spec.num_layers, num_slots, length, spec.num_kv_heads, spec.head_dim,
                              self.loaded.dtype, self.device)

    def forward(self, token_chunks: list[list[int]], slots: list[int], context_lens: list[int]) -> torch.Tensor:
        batch = ForwardBatch.build(token_chunks, slots, context_lens, self.device)
        return self.model(batch, self.kv)

    def sample(self, logits: torch.Tensor, states: list[SamplingState]) -> SamplerOutput:
        return self.sampler(logits, states)

    def release(self, slot: int) -> None:
        release = getattr(self.model, "release", None)
        if release is not None:
            release(slot)
