"""Tiny random checkpoints of every native family, saved as HF directories (safetensors + tokenizer)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

VOCAB = 384  # 256 byte tokens + specials + unused rows, so logits cover ids no text maps to
BOS, EOS = 256, 257

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=EOS,
    initializer_range=0.2,  # peaky logits: greedy choices are decided by clear margins
    tie_word_embeddings=False,
)

FAMILIES: dict[str, dict] = {
    "llama": dict(model_type="llama", architectures=["LlamaForCausalLM"]),
    "llama3-rope": dict(
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
        },
        tie_word_embeddings=True,
    ),
    "mistral": dict(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=12),
    "qwen2": dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], use_sliding_window=True, sliding_window=12,
        max_window_layers=1,
    ),
    "qwen3": dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"]),
    "gemma2": dict(
        model_type="gemma2", architectures=["Gemma2ForCausalLM"], sliding_window=12,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, tie_word_embeddings=True,
    ),
    "gemma3": dict(
        model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], sliding_window=12,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16, tie_word_embeddings=True,
    ),
}


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: one token per UTF-8 byte, plus BOS/EOS."""
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    assert fast.convert_tokens_to_ids(["<s>", "</s>"]) == [BOS, EOS]
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}"
    )
    return fast


def save_tiny_model(family: str, directory: Path, seed: int = 0, **overrides) -> Path:
    """Build a random model of `family`, save weights (safetensors) and tokenizer; return the dir."""
    fields = {**_COMMON, **FAMILIES[family], **overrides}
    model_type = fields.pop("model_type")
    config = AutoConfig.for_model(model_type, **fields)
    config._attn_implementation = "eager"  # the reference: plain softmax attention, soft-capping included
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory


def load_reference(directory: Path):
    """The same checkpoint in HF transformers, eager attention, fp32."""
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()


def greedy(n: int):
    """Greedy sampling of exactly n tokens (EOS ignored)."""
    from engine import SamplingParams

    return SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
