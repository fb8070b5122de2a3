"""Llama 1/2/3.x (incl. llama3 rope scaling) and the SmolLM2/SmolLM3-style checkpoints built on it."""

from __future__ import annotations

from engine.models.rope_config import rope_from_config
from engine.models.spec import DecoderSpec, LayerSpec


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def layer_windows(config) -> list[int | None]:
    """Attention window of each layer: from `layer_types` where the config has them (Qwen2/3,
    Gemma), else the one `sliding_window` on every layer (Mistral), else none (Llama)."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None:
        return [window] * config.num_hidden_layers
    return [window if kind == "sliding_attention" else None for kind in layer_types]


def shape_fields(config) -> dict:
    """The DecoderSpec sizes every family reads the same way from a HF config."""
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=head_dim(config),
        rms_norm_eps=config.rms_norm_eps,
        max_position_embeddings=config.max_position_embeddings,
    )


def llama_like_spec(config, architecture: str, **switches) -> DecoderSpec:
    """Spec of a Llama-shaped model; families pass the switches that differ."""
    layers = tuple(
        LayerSpec(sliding_window=window, rope="default") for window in layer_windows(config)
    )
    return DecoderSpec(
        architecture=architecture,
        layers=layers,
        ropes={"default": rope_from_config(config)},
        activation=getattr(config, "hidden_act", "silu"),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        **shape_fields(config),
        **switches,
    )


def spec_from_config(config) -> DecoderSpec:
    bias = bool(getattr(config, "attention_bias", False))
    return llama_like_spec(
        config,
        "llama",
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bool(getattr(config, "mlp_bias", False)),
    )
