"""In-situ quantization and the fp8 KV cache on the embedded model, against its unquantized fp32 path.

The reference is the `smollm` fixture (the Q4_1 GGUF dequantized to fp32, dense, f32 KV). Measured
on this model (teacher-forced top-1 agreement over 256 positions of a fixed text; greedy 32 tokens
from four prompts):

| path                         | top-1 agreement | greedy: first divergence (of 32) |
|------------------------------|-----------------|----------------------------------|
| --isq int8 (bf16 activations)| 0.984           | 17, 32, 6, 21                    |
| --isq fp8 (fp32 activations) | 0.957           | 32, 25, 6, 21                    |
| --kv-cache-dtype fp8         | 0.969           | 26, 13, 6, 21                    |

A 135M model has many near-ties, so exact greedy parity over 32 tokens does not hold for any 8-bit
path (one prompt of four stays identical); the asserted measure is the agreement rate, with margin.
"""

from __future__ import annotations

import pytest
import torch

from agent_runtime.bench import PARAGRAPH
from engine import LLM, SamplingParams

POSITIONS = 256


@pytest.fixture(scope="module")
def text_ids(smollm) -> list[int]:
    return smollm.tokenizer.encode(PARAGRAPH * 40)[: POSITIONS + 1]


@pytest.fixture(scope="module")
def reference_top1(smollm, text_ids) -> torch.Tensor:
    return smollm.prompt_logits(text_ids)[:POSITIONS].argmax(-1)


def _agreement(llm: LLM, text_ids, reference_top1) -> float:
    return (llm.prompt_logits(text_ids)[:POSITIONS].argmax(-1) == reference_top1).float().mean().item()


@pytest.mark.parametrize(("options", "floor"), [
    (dict(isq="int8"), 0.96),
    (dict(isq="fp8", dtype="f32"), 0.93),
    (dict(isq="none", dtype="f32", kv_cache_dtype="fp8"), 0.95),
], ids=["isq-int8", "isq-fp8", "kv-fp8"])
def test_agreement_with_the_unquantized_path(options, floor, text_ids, reference_top1):
    llm = LLM(warmup=False, kv_cache_memory=64 * 2**20, **options)
    agreement = _agreement(llm, text_ids, reference_top1)
    print(f"{options}: top-1 agreement with fp32 over {POSITIONS} positions: {agreement:.4f}")
    assert agreement >= floor
    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))[0]
    assert "Paris" in out.text, out.text


def test_int8_greedy_32_tokens_track_the_unquantized_path(smollm):
    """Greedy over 32 tokens: the int8 path matches the fp32 path token for token up to its first near-tie."""
    llm = LLM(isq="int8", warmup=False, kv_cache_memory=64 * 2**20)
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    prompts = ["The capital of France is", "def fibonacci(n):", "Write a haiku about the sea.",
               "List three primary colors:"]
    want = [o.token_ids for o in smollm.generate(prompts, params)]
    got = [o.token_ids for o in llm.generate(prompts, params)]
    prefix = [next((i for i, (a, b) in enumerate(zip(w, g, strict=True)) if a != b), 32)
              for w, g in zip(want, got, strict=True)]
    print(f"int8 vs fp32 greedy: tokens before the first divergence {prefix} of 32")
    assert sum(prefix) / (32 * len(prompts)) >= 0.4 and max(prefix) == 32


def test_half_precision_top_logits_are_recomputed_in_fp32():
    """bf16 logits are rounded to steps of 0.125 near 20-30, turning near-ties into exact ties broken by
    token id. The top candidates are recomputed in fp32 (DecoderModel._refine_top): on this model the
    first answer token to the question below has an fp32 margin of 0.08 ("The" over "L"), which the
    int8 path kept only after the fix."""
    llm = LLM(isq="int8", warmup=False, kv_cache_memory=64 * 2**20)
    module = llm.loaded.module
    x = torch.randn(3, module.spec.hidden_size, generator=torch.Generator().manual_seed(0)).bfloat16()
    logits = module.project(x).float()
    refined = logits.clone()
    module._refine_top(x, refined)
    exact = x.float() @ module.model.embed_tokens.dequantize().T
    top = logits.topk(8, dim=-1).indices  # the candidates, recomputed in fp32
    torch.testing.assert_close(refined.gather(1, top), exact.gather(1, top), rtol=1e-5, atol=1e-4)
    assert (refined != logits).any()  # bf16 rounding was there to remove
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0, max_tokens=8))[0]
    assert out.text.startswith("The capital of France is Paris"), out.text
