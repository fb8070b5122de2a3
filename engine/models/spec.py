"""DecoderSpec: the normalized shape of a decoder-only transformer, whatever family it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding of one layer type: inverse frequencies and the cos/sin post-scale."""

    inv_freq: tuple[float, ...]
    attention_scaling: float = 1.0


@dataclass(frozen=True)
class LayerSpec:
    """What differs between layers: attention window and which rotary table they use."""

    sliding_window: int | None
    rope: str  # key into DecoderSpec.ropes


@dataclass(frozen=True)
class DecoderSpec:
    """Every number and switch the generic decoder needs; built by each family's adapter.

    Families differ only in the switches: Llama/Mistral/Qwen2/Qwen3 use `norm_style="llama"`
    (weight * normed), Gemma uses `"gemma"` ((1 + weight) * normed, computed in fp32), Gemma also
    scales embeddings, wraps the MLP in extra norms (`sandwich_norm`) and may soft-cap logits.
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    layers: tuple[LayerSpec, ...]
    ropes: dict[str, RopeSpec]
    activation: str = "silu"
    norm_style: str = "llama"
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sandwich_norm: bool = False
    attn_scale: float | None = None  # None: head_dim ** -0.5
    attn_softcap: float | None = None
    final_softcap: float | None = None
    embed_scale: float | None = None
    tie_word_embeddings: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else self.head_dim**-0.5
