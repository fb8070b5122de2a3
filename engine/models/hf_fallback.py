"""HfFallbackModel: any other AutoModelForCausalLM architecture, run by transformers itself (the slow path)."""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache

from engine.errors import ModelLoadError
from engine.forward_batch import ForwardBatch
from engine.loader.source import ModelSource


class HfFallbackModel(nn.Module):
    """Same forward contract as DecoderModel; keeps one transformers DynamicCache per KV slot."""

    uses_slot_cache = False

    def __init__(self, hf_model) -> None:
        super().__init__()
        self.hf = hf_model
        self.caches: dict[str, DynamicCache] = {}
        # transformers is renaming `past_key_values` to `cache`; use whichever this version takes.
        params = inspect.signature(hf_model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def load(cls, source: ModelSource, dtype: torch.dtype, device: torch.device) -> HfFallbackModel:
        """Load with transformers itself (it dequantizes GGUF files it knows)."""
        if source.kind == "gguf":
            args, kwargs = (source.path.parent,), {"gguf_file": source.path.name}
        else:
            args, kwargs = (source.path,), {}
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(*args, dtype=dtype, **kwargs)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"transformers cannot load {source.path}: {exc}") from exc
        return cls(hf_model.to(device).eval())

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, kv=None) -> torch.Tensor:
        """Logits of the sampling sequences; keys/values stay in transformers' own per-request caches."""
        logits = []
        start = 0
        for seq_id, n, ctx, wants in zip(
            batch.sequence_ids, batch.query_lens, batch.context_lens, batch.samples, strict=True
        ):
            if ctx == 0:
                self.caches[seq_id] = DynamicCache(config=self.hf.config)
            out = self.hf(
                input_ids=batch.input_ids[start : start + n][None],
                position_ids=batch.positions[start : start + n][None],
                use_cache=True,
                **{self.cache_kwarg: self.caches[seq_id]},
            )
            if wants:
                logits.append(out.logits[0, -1].float())
            start += n
        return torch.stack(logits) if logits else torch.empty(0, device=batch.input_ids.device)

    def release(self, seq_id: str) -> None:
        self.caches.pop(seq_id, None)
