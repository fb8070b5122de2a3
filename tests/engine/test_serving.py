"""The serving engine: continuous batching, prefix caching, chunked prefill, preemption, abort, recovery."""

from __future__ import annotations

import asyncio
import random

import pytest
from tiny_models import save_tiny_model

from engine import LLM, RequestFailedError, SamplingParams
from engine.async_engine import AsyncEngine
from engine.config import EngineConfig

POISON = 383  # a token id no text maps to; the fault injector fails any batch that contains it


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model("llama", tmp_path_factory.mktemp("serve"), max_position_embeddings=4096))


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)


def random_prompts(count: int, low: int, high: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(0, 256) for _ in range(rng.randint(low, high))] for _ in range(count)]


def assert_no_leaks(core) -> None:
    core.kv_manager.check_invariants()
    assert core.kv_manager.num_used_blocks == 0
    assert not core.sequences and not core.scheduler.has_unfinished()


def test_32_concurrent_requests_equal_each_alone(model_dir):
    llm = LLM(model_dir)
    prompts = random_prompts(32, 10, 1500)
    rng = random.Random(1)
    params = [greedy(rng.randint(1, 40)) for _ in prompts]
    together = llm.generate(prompts, params)
    assert llm.stats()["running"] == 0
    for prompt, p, out in zip(prompts, params, together, strict=True):
        alone = llm.generate(prompt, p)[0]
        assert out.token_ids == alone.token_ids
        assert len(out.token_ids) == p.max_tokens
    assert_no_leaks(llm.core)


def test_prefix_cache_computes_only_the_suffix(model_dir):
    prefix = random_prompts(1, 1024, 1024, seed=5)[0]
    first, second = prefix + [7] * 50, prefix + [9] * 40
    on = LLM(model_dir)
    before = on.stats()
    out_a = on.generate(first, greedy(4))[0]
    middle = on.stats()
    out_b = on.generate(second, greedy(4))[0]
    after = on.stats()
    computed_b = after["computed_tokens"] - middle["computed_tokens"]
    # The suffix (40) plus at most one block (16) of the prompt, plus the 3 decode steps.
    assert computed_b <= 40 + 16 + 3, computed_b
    assert after["prefix_cache_hits"] - middle["prefix_cache_hits"] >= 1024 - 16
    assert middle["computed_tokens"] - before["computed_tokens"] == len(first) + 3
    off = LLM(model_dir, enable_prefix_caching=False)
    assert off.generate(first, greedy(4))[0].token_ids == out_a.token_ids
    assert off.generate(second, greedy(4))[0].token_ids == out_b.token_ids
    assert off.stats()["prefix_cache_hits"] == 0


def test_chunked_prefill_keeps_decodes_running_and_changes_nothing(model_dir):
    long_prompt = random_prompts(1, 3000, 3000, seed=7)[0]
    short = random_prompts(2, 20, 30, seed=8)
    unchunked = LLM(model_dir, max_num_batched_tokens=4096)
    expected = [o.token_ids for o in unchunked.generate([long_prompt, *short], greedy(12))]

    llm = LLM(model_dir, max_num_batched_tokens=512)
    core = llm.core
    shorts = [core.new_sequence(p, greedy(40)) for p in short]
    for seq in shorts:
        core.add(seq)
    core.step()  # both short prompts prefilled, first tokens sampled
    big = core.new_sequence(long_prompt, greedy(12))
    core.add(big)
    steps_while_prefilling = 0
    while not big.output_token_ids:
        produced = {c.request_id for c in core.step()}
        steps_while_prefilling += 1
        if not big.output_token_ids:
            assert {s.request_id for s in shorts} <= produced, "a decode stalled behind the prefill"
    assert steps_while_prefilling >= 3000 // 512
    while core.has_unfinished():
        core.step()
    assert big.output().token_ids == expected[0]
    # The short requests ran for 40 tokens here; their first 12 equal the unchunked run's.
    assert [s.output().token_ids[:12] for s in shorts] == expected[1:]
    assert_no_leaks(core)


def test_preemption_under_a_small_pool_finishes_everything_identically(model_dir):
    prompts = random_prompts(8, 100, 200, seed=11)
    reference = [o.token_ids for o in LLM(model_dir).generate(prompts, greedy(60))]
    per_block = 2 * 3 * 16 * 2 * 16 * 4  # layers * block * kv_heads * head_dim * fp32, keys and values
    small = LLM(model_dir, kv_cache_memory=40 * per_block, block_size=16)
    assert small.core.num_blocks == 40  # room for about 2.5 of these requests at a time
    outs = small.generate(prompts, greedy(60))
    assert [o.token_ids for o in outs] == reference
    assert small.stats()["preemptions"] > 0
    assert_no_leaks(small.core)


def inject_fault(engine_core) -> None:
    """Make the model raise on any forward that carries the POISON token."""
    model = engine_core.runner.model
    forward = model.forward

    def faulty(batch, kv):
        if bool((batch.input_ids == POISON).any()):
            raise RuntimeError("injected fault")
        return forward(batch, kv)

    model.forward = faulty


def test_fault_fails_only_the_poisoned_request_and_the_engine_recovers(model_dir):
    llm = LLM(model_dir)
    inject_fault(llm.core)
    good = random_prompts(3, 30, 60, seed=3)
    expected = [o.token_ids for o in llm.generate(good, greedy(10))]
    outs = llm.generate([good[0], [1, 2, POISON, 4], good[1], good[2]], greedy(10))
    assert [o.finish_reason for o in outs] == ["length", "error", "length", "length"]
    assert [outs[i].token_ids for i in (0, 2, 3)] == expected
    with pytest.raises(RequestFailedError, match="injected fault"):
        list(llm.stream([POISON, 5, 6], greedy(5)))
    assert llm.generate(good[0], greedy(10))[0].token_ids == expected[0]
    stats = llm.stats()
    assert stats["engine_restarts"] == 2 and stats["requests_failed"] == 2
    assert_no_leaks(llm.core)


def test_async_engine_concurrency_abort_failure_and_no_leaks(model_dir):
    engine = AsyncEngine(EngineConfig(model=model_dir))
    inject_fault(engine.core)
    prompts = random_prompts(12, 20, 300, seed=21)
    reference = LLM(model_dir)
    expected = [o.token_ids for o in reference.generate(prompts, greedy(30))]

    async def collect(prompt, limit=None):
        tokens = []
        async for chunk in engine.generate(prompt, greedy(30)):
            tokens.extend(chunk.token_ids)
            if limit is not None and len(tokens) >= limit:
                break  # leaving the loop closes the iterator: the request is aborted
        return tokens

    async def main():
        tasks = [asyncio.create_task(collect(p)) for p in prompts]
        aborted = [asyncio.create_task(collect(p, limit=3)) for p in prompts[:4]]
        poisoned = asyncio.create_task(collect([POISON] * 10))
        cancelled = asyncio.create_task(collect(prompts[5]))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        done = await asyncio.gather(*tasks)
        cut = await asyncio.gather(*aborted)
        with pytest.raises(RequestFailedError):
            await poisoned
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return done, cut

    try:
        done, cut = asyncio.run(main())
        assert done == expected
        assert all(len(c) == 3 for c in cut)
        for _ in range(100):  # aborts are applied by the engine thread: give it a moment
            if not engine.core.has_unfinished():
                break
            asyncio.run(asyncio.sleep(0.02))
        assert_no_leaks(engine.core)
        assert engine.stats()["requests_failed"] >= 1
    finally:
        engine.shutdown()


def test_async_engine_rejects_bad_requests_with_clear_errors(model_dir):
    engine = AsyncEngine(EngineConfig(model=model_dir, kv_cache_memory=20 * 2 * 3 * 16 * 2 * 16 * 4))

    async def run(prompt, params):
        return [c async for c in engine.generate(prompt, params)]

    try:
        from engine import ContextLengthError, InvalidRequestError

        with pytest.raises(ContextLengthError):
            asyncio.run(run([5] * 5000, greedy(1)))
        with pytest.raises(InvalidRequestError, match="blocks"):
            asyncio.run(run([5] * 400, greedy(10)))  # 410 tokens need 26 blocks; the pool has 20
        chunks = asyncio.run(run([5] * 10, greedy(3)))
        assert chunks[-1].finish_reason == "length" and sum(len(c.token_ids) for c in chunks) == 3
    finally:
        engine.shutdown()


def test_engine_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_num_seqs=0"):
        EngineConfig(max_num_seqs=0)
    with pytest.raises(ValueError, match="gpu_memory_utilization=1.5"):
        EngineConfig(gpu_memory_utilization=1.5)

