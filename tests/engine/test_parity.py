"""Greedy parity with HF transformers: same weights, same first 64 tokens, logits within 1e-3."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, load_reference, save_tiny_model
from transformers import AutoModelForCausalLM

from engine import LLM, SamplingParams

PROMPT = [ord(c) for c in "Parity check: the same weights give the same tokens."]
GREEDY_64 = SamplingParams(temperature=0, max_tokens=64, min_tokens=64)


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False)
    return out[0, len(prompt):].tolist()


def last_logits(llm: LLM, prompt: list[int]) -> torch.Tensor:
    return llm.next_token_logits(prompt)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    directory = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, directory, load_reference(directory), LLM(str(directory), allow_fallback=False)


def test_native_family_matches_transformers(family):
    name, _, reference, llm = family
    assert llm.loaded.native, f"{name} should load natively"
    with torch.no_grad():
        expected_logits = reference(torch.tensor([PROMPT])).logits[0, -1]
    diff = (last_logits(llm, PROMPT) - expected_logits).abs().max().item()
    assert diff <= 1e-3, f"{name}: last-position logits differ by {diff}"
    ours = llm.generate(PROMPT, GREEDY_64)[0].token_ids
    assert ours == hf_greedy(reference, PROMPT, 64), f"{name}: greedy tokens differ"


def test_batched_and_chunked_generation_equal_single(family, tmp_path):
    """Batch decode (padded, masked) and chunked prefill must not change any sequence's tokens."""
    name, directory, _, llm = family
    prompts = [PROMPT, PROMPT[:7], PROMPT[5:40], [3] * 20]
    params = SamplingParams(temperature=0, max_tokens=24, min_tokens=24)
    singles = [llm.generate(p, params)[0].token_ids for p in prompts]
    batched = [o.token_ids for o in llm.generate(prompts, params)]
    assert batched == singles, f"{name}: batching changed the output"
    chunked = LLM(str(directory), max_num_batched_tokens=5)
    assert [o.token_ids for o in chunked.generate(prompts, params)] == singles, f"{name}: chunked prefill"


def test_embedded_smollm2_matches_transformers(smollm):
    """The embedded GGUF (Q4_1, dequantized to fp32) against HF's own GGUF loader."""
    path = smollm.loaded.source.path
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    for prompt in (
        smollm.tokenizer.encode("The capital of France is"),
        smollm.tokenizer.encode_chat([{"role": "user", "content": "Write a haiku about the sea."}]),
    ):
        with torch.no_grad():
            expected = reference(torch.tensor([prompt])).logits[0, -1]
        diff = (last_logits(smollm, prompt) - expected).abs().max().item()
        assert diff <= 1e-3, f"last-position logits differ by {diff}"
        ours = smollm.generate(prompt, GREEDY_64)[0].token_ids
        assert ours == hf_greedy(reference, prompt, 64)
