"""Architectures without a native implementation run through transformers, or fail clearly."""

from __future__ import annotations

import pytest
import torch
from tiny_models import byte_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from engine import LLM, SamplingParams, UnsupportedArchitectureError


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=384, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=256, eos_token_id=257, initializer_range=0.2)
    GPT2LMHeadModel(config).save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory


def test_unknown_architecture_with_fallback_disabled_names_it(gpt2_dir):
    with pytest.raises(UnsupportedArchitectureError, match="GPT2LMHeadModel.*fallback is disabled.*LlamaForCausalLM"):
        LLM(str(gpt2_dir), allow_fallback=False)


def test_fallback_generates_what_transformers_generates(gpt2_dir):
    llm = LLM(str(gpt2_dir))
    assert not llm.loaded.native
    prompt = [ord(c) for c in "fallback path"]
    ours = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=32, min_tokens=32))[0].token_ids
    reference = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    ids = torch.tensor([prompt])
    expected = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32,
                                  min_new_tokens=32, do_sample=False)[0, len(prompt):].tolist()
    assert ours == expected
    # Two sequences at once through the per-slot caches give the same tokens as one at a time.
    both = llm.generate([prompt, prompt[:5]], SamplingParams(temperature=0, max_tokens=8, min_tokens=8))
    assert both[0].token_ids == ours[:8]
