"""The GPU code path of whole models, run on CPU: every Triton kernel forced on under TRITON_INTERPRET=1
(agent_kernels.dispatch.forced) and compared with the plain-torch path of the same engine.

Covers RMSNorm (+ fused residual), rotary (llama3 scaling), act-and-mul, the fused KV write, paged
prefill attention (chunked, with a cached prefix) and paged decode attention (a batch of sequences),
across the families' features: GQA, q/k norm, sliding windows, soft-capping, sandwich norms.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import greedy, save_tiny_model

from agent_kernels import dispatch
from engine import LLM

pytestmark = pytest.mark.skipif(not (dispatch.triton_available() and (dispatch.interpreting()
                                                                      or torch.cuda.is_available())),
                                reason="needs triton (and TRITON_INTERPRET=1 without CUDA)")

FAMILIES = ["llama", "llama3-rope", "qwen3", "mistral", "gemma2"]


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request, tmp_path_factory) -> LLM:
    path = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    # Small budget: prompts prefill in chunks of 8, so later chunks attend to a cached prefix.
    return LLM(str(path), dtype="f32", device="cpu", warmup=False, kv_cache_memory=4 * 2**20,
               max_num_batched_tokens=8, enable_prefix_caching=False)


PROMPT = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]  # > window 12


def test_prefill_logits_match_the_torch_path(engine):
    reference = engine.prompt_logits(PROMPT)
    with dispatch.forced():
        ours = engine.prompt_logits(PROMPT)
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=2e-4)


def test_batched_greedy_decode_matches_the_torch_path(engine):
    prompts = [PROMPT, PROMPT[:5], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]]
    reference = [o.token_ids for o in engine.generate(prompts, greedy(6))]
    with dispatch.forced():
        ours = [o.token_ids for o in engine.generate(prompts, greedy(6))]
    assert ours == reference
