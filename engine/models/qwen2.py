"""Qwen2 / Qwen2.5: Llama with biased q/k/v projections and optional sliding-window layers."""

from __future__ import annotations

from engine.models.llama import llama_like_spec
from engine.models.spec import DecoderSpec


def spec_from_config(config) -> DecoderSpec:
    return llama_like_spec(config, "qwen2", qkv_bias=True)
