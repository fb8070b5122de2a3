"""Rotary parameters read from a HF config, through transformers' own RoPE init functions."""

from __future__ import annotations

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from engine.errors import UnsupportedArchitectureError
from engine.models.spec import RopeSpec

# Types whose frequencies change with the sequence length at run time; not implemented natively.
_DYNAMIC = {"dynamic", "longrope"}


def rope_from_config(config, layer_type: str | None = None) -> RopeSpec:
    """RopeSpec for the whole model, or for one layer type (Gemma 3 has one per type)."""
    params = config.rope_parameters
    if layer_type is not None:
        params = params[layer_type]
    rope_type = params.get("rope_type", "default")
    if rope_type in _DYNAMIC:
        raise UnsupportedArchitectureError(
            f"rope_type {rope_type!r} is not implemented natively; use the transformers fallback"
        )
    if rope_type == "default":
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        base = params["rope_theta"]
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        scaling = 1.0
    else:
        kwargs = {"layer_type": layer_type} if layer_type is not None else {}
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, None, **kwargs)
    return RopeSpec(inv_freq=tuple(inv_freq.tolist()), attention_scaling=float(scaling))
