"""Registry of native model families, keyed by HF `architectures` and `model_type` names."""

from __future__ import annotations

from collections.abc import Callable

from engine.models import gemma, llama, mistral, qwen2, qwen3
from engine.models.decoder import DecoderModel
from engine.models.spec import DecoderSpec

SpecBuilder = Callable[[object], DecoderSpec]

# HF architecture class name -> spec builder. model_type names are accepted too (GGUF gives those).
NATIVE_ARCHITECTURES: dict[str, SpecBuilder] = {
    "LlamaForCausalLM": llama.spec_from_config,
    "MistralForCausalLM": mistral.spec_from_config,
    "Qwen2ForCausalLM": qwen2.spec_from_config,
    "Qwen3ForCausalLM": qwen3.spec_from_config,
    "Gemma2ForCausalLM": gemma.gemma2_spec,
    "Gemma3ForCausalLM": gemma.gemma3_spec,
}
_MODEL_TYPES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}


def native_builder(config) -> SpecBuilder | None:
    """The spec builder for a HF config, or None when no native family covers it."""
    for arch in getattr(config, "architectures", None) or []:
        if arch in NATIVE_ARCHITECTURES:
            return NATIVE_ARCHITECTURES[arch]
    arch = _MODEL_TYPES.get(getattr(config, "model_type", ""))
    return NATIVE_ARCHITECTURES.get(arch) if arch else None


__all__ = ["DecoderModel", "DecoderSpec", "NATIVE_ARCHITECTURES", "native_builder"]
