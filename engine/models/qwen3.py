"""Qwen3: Llama with per-head RMSNorm on queries and keys before the rotary embedding."""

from __future__ import annotations

from engine.models.llama import llama_like_spec
from engine.models.spec import DecoderSpec


def spec_from_config(config) -> DecoderSpec:
    bias = bool(getattr(config, "attention_bias", False))
    return llama_like_spec(config, "qwen3", qk_norm=True, qkv_bias=bias, o_bias=bias)
