"""Gemma 2 and Gemma 3 text: (1 + w) RMSNorm, scaled embeddings, sandwich norms, alternating windows.

Gemma 2 soft-caps attention and final logits; Gemma 3 replaces the attention cap with q/k norm
and gives sliding and full layers their own rotary base.
"""

from __future__ import annotations

from engine.models.llama import layer_windows, shape_fields
from engine.models.rope_config import rope_from_config
from engine.models.spec import DecoderSpec, LayerSpec


def gemma2_spec(config) -> DecoderSpec:
    return _spec(config, "gemma2", qk_norm=False, per_type_rope=False)


def gemma3_spec(config) -> DecoderSpec:
    return _spec(config, "gemma3", qk_norm=True, per_type_rope=True)


def _spec(config, architecture: str, qk_norm: bool, per_type_rope: bool) -> DecoderSpec:
    kinds = config.layer_types
    if per_type_rope:
        ropes = {kind: rope_from_config(config, kind) for kind in sorted(set(kinds))}
        rope_of = list(kinds)
    else:
        ropes = {"default": rope_from_config(config)}
        rope_of = ["default"] * len(kinds)
    layers = tuple(
        LayerSpec(sliding_window=window, rope=rope) for window, rope in zip(layer_windows(config), rope_of, strict=True)
    )
    bias = bool(getattr(config, "attention_bias", False))
    return DecoderSpec(
        architecture=architecture,
        layers=layers,
        ropes=ropes,
        activation=config.hidden_activation,
        norm_style="gemma",
        qkv_bias=bias,
        o_bias=bias,
        qk_norm=qk_norm,
        sandwich_norm=True,
        attn_scale=config.query_pre_attn_scalar**-0.5,
        attn_softcap=getattr(config, "attn_logit_softcapping", None),
        final_softcap=getattr(config, "final_logit_softcapping", None),
        embed_scale=config.hidden_size**0.5,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
        **shape_fields(config),
    )
