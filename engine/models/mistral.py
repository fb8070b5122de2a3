"""Mistral: Llama with a sliding attention window on every layer (when the config sets one)."""

from __future__ import annotations

from engine.models.llama import llama_like_spec
from engine.models.spec import DecoderSpec


def spec_from_config(config) -> DecoderSpec:
    return llama_like_spec(config, "mistral")
