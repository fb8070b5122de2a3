"""CUDA-graph decode (engine/cuda_graphs.py): buckets, padding rows, and the padded static-buffer step.

On CPU the padded step runs without capturing, under the Triton interpreter (padding rows need the
Triton KV write, which skips slot -1, and the Triton decode attention, which gives zeros for length 0):
it must give the logits of the plain decode step. On CUDA the captured graphs are compared the same way.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import greedy, save_tiny_model

from agent_kernels import dispatch
from engine import LLM
from engine.cuda_graphs import CudaGraphDecode, bucket_for, bucket_sizes
from engine.forward_batch import ForwardBatch


def test_bucket_sizes_cover_every_batch_up_to_max_num_seqs():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(6) == [1, 2, 4, 6]
    assert bucket_sizes(32) == [1, 2, 4, 8, 16, 24, 32]
    assert bucket_sizes(20) == [1, 2, 4, 8, 16, 20]
    sizes = bucket_sizes(64)
    assert [bucket_for(n, sizes) for n in (1, 3, 5, 9, 64)] == [1, 4, 8, 16, 64]
    assert bucket_for(65, sizes) is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LLM:
    path = save_tiny_model("mistral", tmp_path_factory.mktemp("graphs"))  # sliding window 12
    return LLM(str(path), dtype="f32", device="cpu", warmup=False, kv_cache_memory=4 * 2**20, max_num_seqs=6)


def _decode_batch(llm: LLM, lengths: list[int]) -> ForwardBatch:
    """Prefill sequences of `lengths` tokens, then the batch of their next (decode) step."""
    block = llm.core.config.block_size
    tables, contexts, tokens = [], [], []
    next_block = 1
    for i, n in enumerate(lengths):
        blocks = -(-(n + 1) // block)
        tables.append(list(range(next_block, next_block + blocks))[::-1] if i % 2 else
                      list(range(next_block, next_block + blocks)))
        next_block += blocks
        prompt = [(7 * i + j) % 200 + 1 for j in range(n)]
        prefill = ForwardBatch.build([prompt], [0], [tables[-1]], block, [True], ["p"], torch.device("cpu"))
        llm.loaded.module(prefill, llm.core.runner.kv)
        contexts.append(n)
        tokens.append([(11 * i) % 200 + 3])
    return ForwardBatch.build(tokens, contexts, tables, block, [True] * len(lengths), [str(i) for i in
                              range(len(lengths))], torch.device("cpu"))


@pytest.mark.skipif(not (dispatch.triton_available() and dispatch.interpreting()), reason="needs TRITON_INTERPRET=1")
def test_padded_static_step_matches_the_plain_decode_step(tiny):
    runner = tiny.core.runner
    with dispatch.forced():
        batch = _decode_batch(tiny, [5, 17, 30])  # 3 sequences -> bucket 4: one padding row
        expected = tiny.loaded.module(batch, runner.kv)
        graphs = CudaGraphDecode(tiny.loaded.module, runner.kv, max_num_seqs=6, max_model_len=64, capture=False)
        assert graphs.applies(batch)
        got = graphs.run(batch)
        assert set(graphs.graphs) == {4}
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        again = graphs.run(_decode_batch(tiny, [9]))  # bucket 1, buffers reused for other sequences
        assert again.shape[0] == 1 and set(graphs.graphs) == {1, 4}


def test_graphs_do_not_apply_to_prefill_or_oversized_batches(tiny):
    graphs = CudaGraphDecode(tiny.loaded.module, tiny.core.runner.kv, max_num_seqs=2, max_model_len=64,
                             capture=False)
    block = tiny.core.config.block_size
    prefill = ForwardBatch.build([[1, 2, 3]], [0], [[1]], block, [True], ["a"], torch.device("cpu"))
    assert not graphs.applies(prefill)
    three = ForwardBatch.build([[1], [2], [3]], [4, 4, 4], [[1], [2], [3]], block, [True] * 3, list("abc"),
                               torch.device("cpu"))
    assert not graphs.applies(three)
    assert tiny.core.runner.graphs is None  # CPU engines never build graphs


@pytest.mark.gpu
def test_captured_graphs_match_eager_decoding_on_cuda(tmp_path):
    path = save_tiny_model("llama", tmp_path / "m")
    eager = LLM(str(path), dtype="bf16", device="cuda", warmup=False, cuda_graphs=False)
    graphed = LLM(str(path), dtype="bf16", device="cuda", warmup=False)
    assert graphed.core.runner.graphs is not None
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7], list(range(10, 40))]
    want = [o.token_ids for o in eager.generate(prompts, greedy(12))]
    got = [o.token_ids for o in graphed.generate(prompts, greedy(12))]
    assert got == want
    assert graphed.core.runner.graphs.graphs and graphed.core.runner.graphs.failed is None
