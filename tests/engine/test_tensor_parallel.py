"""Tensor parallelism on CPU (gloo, 2 processes): the split, greedy parity with one process, worker faults.

Parity is exact on greedy tokens. Logits are not bit-identical: a row-parallel layer sums two
partial products where one process does one matmul, so the last bits differ (measured: at most
~5e-6 on the tiny models, ~3e-5 on SmolLM2-135M, whose top-2 margins on these prompts are >= 0.1).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from tiny_models import greedy, save_tiny_model

from engine import LLM, RequestFailedError
from engine.async_engine import AsyncEngine
from engine.config import EngineConfig
from engine.core import EngineCore
from engine.distributed.plan import TensorParallelPlan
from engine.errors import TensorParallelError
from engine.loader import load_model

PROMPTS = [
    [ord(c) for c in "Parity check: the same weights give the same tokens."],
    [5, 6, 7, 8, 9] * 7,
    [300],
]
LOGIT_TOLERANCE = 1e-4



pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("tp-llama"), max_position_embeddings=4096)


def run_greedy(core: EngineCore, prompts: list[list[int]], n: int) -> list[list[int]]:
    seqs = [core.new_sequence(p, greedy(n)) for p in prompts]
    for seq in seqs:
        core.add(seq)
    while core.has_unfinished():
        core.step()
    return [s.output().token_ids for s in seqs]


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.is_running()}


# --- the plan -------------------------------------------------------------------------------------


def test_plan_splits_whole_kv_groups_unevenly_when_they_do_not_divide():
    plan = TensorParallelPlan.build(
        num_heads=9, num_kv_heads=3, intermediate_size=1536, vocab_size=49152, world_size=2
    )
    assert [(s.q_heads, s.kv_heads) for s in plan.shards] == [
        (range(0, 6), range(0, 2)),
        (range(6, 9), range(2, 3)),
    ]
    assert [s.intermediate for s in plan.shards] == [range(0, 768), range(768, 1536)]
    assert plan.vocab_sizes == [24576, 24576]


def test_plan_replicates_a_kv_head_over_ranks_when_there_are_fewer_kv_heads_than_ranks():
    plan = TensorParallelPlan.build(
        num_heads=8, num_kv_heads=2, intermediate_size=64, vocab_size=385, world_size=4
    )
    assert [s.q_heads for s in plan.shards] == [range(0, 2), range(2, 4), range(4, 6), range(6, 8)]
    assert [s.kv_heads for s in plan.shards] == [range(0, 1), range(0, 1), range(1, 2), range(1, 2)]
    assert plan.vocab_sizes == [97, 96, 96, 96]


def test_plan_refuses_a_split_it_cannot_make_and_says_what_would_work():
    with pytest.raises(
        TensorParallelError, match="cannot split 9 query heads over 3 KV heads: use at most 3"
    ):
        TensorParallelPlan.build(
            num_heads=9, num_kv_heads=3, intermediate_size=64, vocab_size=100, world_size=4
        )


def test_quantized_weights_are_refused_before_anything_starts(llama_dir):
    before = children()
    with pytest.raises(TensorParallelError, match="--isq int8 quantizes them: pass --isq none"):
        LLM(str(llama_dir), tensor_parallel_size=2, isq="int8")
    assert children() == before


def test_a_split_the_model_cannot_take_fails_clearly_and_leaves_no_worker(llama_dir):
    before = children()
    with pytest.raises(
        TensorParallelError, match="tensor_parallel_size=3 cannot split 4 query heads over 2 KV"
    ):
        LLM(str(llama_dir), tensor_parallel_size=3)
    assert children() == before


# --- greedy parity --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_tp2_greedy_tokens_equal_one_process_on_tiny_models(family, tmp_path):
    directory = str(save_tiny_model(family, tmp_path / family))
    single = LLM(directory, num_threads=1)
    expected = [o.token_ids for o in single.generate(PROMPTS, greedy(48))]
    split = LLM(directory, tensor_parallel_size=2)
    try:
        assert [o.token_ids for o in split.generate(PROMPTS, greedy(48))] == expected
        for prompt in PROMPTS:
            diff = (split.next_token_logits(prompt) - single.next_token_logits(prompt)).abs().max().item()
            assert diff <= LOGIT_TOLERANCE, f"{family}: logits differ by {diff}"
        # Rank 0 holds half the heads: its KV cache has 1 of the 2 KV heads, its fused QKV 2+1+1 heads of 16.
        assert split.core.runner.kv.keys[0].shape[2] == 1
        assert split.core.loaded.module.model.layers[0].self_attn.qkv_proj.weight.shape[0] == 4 * 16
        assert split.stats()["tensor_parallel_size"] == 2
    finally:
        split.close()


def test_tp2_greedy_tokens_equal_one_process_on_the_embedded_model():
    """SmolLM2-135M: 9 query / 3 KV heads split 6/2 and 3/1 (whole GQA groups), dense fp32 weights."""
    loaded = load_model(None, dtype="f32", device="cpu", isq="none")
    reference = EngineCore.create(
        EngineConfig(dtype="f32", device="cpu", isq="none", warmup=False, num_threads=1),
        dataclasses.replace(loaded, module=copy.deepcopy(loaded.module)),
    )
    tok = loaded.tokenizer
    prompts = [
        tok.encode("The capital of France is"),
        tok.encode_chat([{"role": "user", "content": "Write a haiku about the sea."}]),
        tok.encode("def fibonacci(n):"),
    ]
    expected = run_greedy(reference, prompts, 32)
    split = EngineCore.create(
        EngineConfig(dtype="f32", device="cpu", isq="none", tensor_parallel_size=2), loaded
    )
    try:
        assert run_greedy(split, prompts, 32) == expected
        for prompt in prompts:
            diff = (split.next_token_logits(prompt) - reference.next_token_logits(prompt)).abs().max().item()
            assert diff <= LOGIT_TOLERANCE, f"logits differ by {diff}"
        assert [split.runner.kv.keys[0].shape[2]] == [2]  # rank 0: 2 of the 3 KV heads
    finally:
        split.close()


# --- faults ---------------------------------------------------------------------------------------


def test_killing_a_worker_fails_its_request_clearly_and_the_next_request_succeeds(llama_dir):
    engine = AsyncEngine(EngineConfig(model=str(llama_dir), tensor_parallel_size=2))
    first_worker = engine.core.tp.processes[1]

    async def tokens(prompt, n):
        return [t async for chunk in engine.generate(prompt, greedy(n)) for t in chunk.token_ids]

    async def killed_midway():
        seen = 0
        async for _ in engine.generate([4, 5, 6], greedy(3000)):
            seen += 1
            if seen == 5:
                os.kill(first_worker.pid, signal.SIGKILL)
        return seen

    try:
        expected = asyncio.run(tokens([1, 2, 3], 20))
        with pytest.raises(
            RequestFailedError, match=rf"worker rank 1 \(pid {first_worker.pid}\) was killed by SIGKILL"
        ):
            asyncio.run(killed_midway())
        assert asyncio.run(tokens([1, 2, 3], 20)) == expected
        stats = engine.stats()
        assert stats["requests_failed"] == 1 and stats["tensor_parallel_restarts"] == 1
        second_worker = engine.core.tp.processes[1]
        assert second_worker.pid != first_worker.pid and second_worker.poll() is None
        # A worker that dies while the engine is idle held nobody's keys/values: the next request
        # waits for the restart and succeeds.
        os.kill(second_worker.pid, signal.SIGKILL)
        second_worker.wait()
        assert asyncio.run(tokens([1, 2, 3], 20)) == expected
        assert engine.stats()["requests_failed"] == 1 and engine.stats()["tensor_parallel_restarts"] == 2
        third_worker = engine.core.tp.processes[1]
    finally:
        engine.shutdown()
    assert third_worker.poll() == 0  # asked to stop, it exited cleanly
    assert not engine.core.sequences


def test_workers_started_outside_join_through_torchrun_variables(llama_dir, monkeypatch):
    """Rank 0 given MASTER_ADDR/MASTER_PORT/RANK=0/WORLD_SIZE starts no worker; one started so joins."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    root = str(Path(__file__).resolve().parents[2])
    worker = subprocess.Popen(
        [sys.executable, "-m", "engine.distributed.worker"],
        cwd=root,
        env={**os.environ, **torchrun, "RANK": "1", "LOCAL_RANK": "0"},
    )
    try:
        for name, value in {**torchrun, "RANK": "0"}.items():
            monkeypatch.setenv(name, value)
        split = LLM(str(llama_dir), tensor_parallel_size=2)
        assert split.core.tp.rendezvous.external and not split.core.tp.processes
        monkeypatch.undo()
        expected = [o.token_ids for o in LLM(str(llama_dir), num_threads=1).generate(PROMPTS[:2], greedy(16))]
        assert [o.token_ids for o in split.generate(PROMPTS[:2], greedy(16))] == expected
        split.close()
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
