"""Data parallelism: the routing rule, and replicas behind one router serving like a single engine."""

from __future__ import annotations

import asyncio
import random

import pytest
from tiny_models import greedy, save_tiny_model

from engine.async_engine import AsyncEngine
from engine.config import EngineConfig
from engine.data_parallel import DataParallelEngine
from engine.replica_router import ReplicaLoad, choose_replica

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model("llama", tmp_path_factory.mktemp("dp"), max_position_embeddings=4096))


async def tokens(engine, prompt, n: int) -> list[int]:
    return [t async for chunk in engine.generate(prompt, greedy(n)) for t in chunk.token_ids]


# --- the rule -------------------------------------------------------------------------------------


def test_router_prefers_the_longest_cached_prefix_then_the_most_free_blocks():
    loads = [ReplicaLoad(0, 90, 0), ReplicaLoad(64, 10, 3), ReplicaLoad(64, 50, 4)]
    assert choose_replica(loads, blocks_needed=5, max_num_seqs=32, balance_slack=8) == 2
    assert choose_replica([ReplicaLoad(0, 10, 0), ReplicaLoad(0, 30, 0)], 5, 32, 8) == 1
    assert choose_replica([ReplicaLoad(0, 10, 0), ReplicaLoad(0, 10, 0)], 5, 32, 8) == 0  # a tie: the first


def test_router_skips_a_prefix_holder_without_room():
    holder, idle = ReplicaLoad(512, 3, 1), ReplicaLoad(0, 100, 0)
    assert (
        choose_replica([holder, idle], blocks_needed=5, max_num_seqs=32, balance_slack=8) == 1
    )  # too few blocks
    busy = ReplicaLoad(512, 100, 32)
    assert choose_replica([busy, idle], 5, 32, 8) == 1  # max_num_seqs in flight
    ahead = ReplicaLoad(512, 100, 9)
    assert choose_replica([ahead, idle], 5, 32, 8) == 1  # more than balance_slack ahead of the idle one
    assert (
        choose_replica([ReplicaLoad(512, 100, 8), idle], 5, 32, 8) == 0
    )  # within the slack: the prefix wins
    full = [ReplicaLoad(0, 1, 40), ReplicaLoad(0, 2, 40)]
    assert choose_replica(full, 5, 32, 8) == 1  # nobody has room: still the most free blocks


# --- replicas -------------------------------------------------------------------------------------


def test_dp2_serves_16_concurrent_requests_on_both_replicas_as_one_engine_would(model_dir):
    rng = random.Random(0)
    prompts = [[rng.randrange(256) for _ in range(rng.randint(10, 300))] for _ in range(16)]

    async def serve(engine):
        return await asyncio.gather(*(tokens(engine, p, 24) for p in prompts))

    single = AsyncEngine(EngineConfig(model=model_dir, num_threads=1))
    try:
        expected = asyncio.run(serve(single))
    finally:
        single.shutdown()
    engine = DataParallelEngine(EngineConfig(model=model_dir, data_parallel_size=2))
    try:
        assert asyncio.run(serve(engine)) == expected
        per = engine.replica_stats()
        assert [s["requests_routed"] for s in per] == [s["requests_finished"] for s in per]
        assert all(s["requests_finished"] >= 4 for s in per), per  # both used, neither starved
        total = engine.stats()
        assert total["requests_finished"] == 16 and total["data_parallel_size"] == 2
        assert total["generation_tokens"] == 16 * 24
        assert engine.replicas[0].loaded is engine.replicas[1].loaded  # one copy of the weights on CPU
    finally:
        engine.shutdown()


def test_shared_prefix_requests_go_to_the_replica_that_holds_the_prefix(model_dir):
    rng = random.Random(1)
    first, second = ([rng.randrange(256) for _ in range(256)] for _ in range(2))
    engine = DataParallelEngine(EngineConfig(model=model_dir, data_parallel_size=2))

    async def main():
        # Two prefixes at once: one lands on each replica (the second sees the first's blocks promised).
        await asyncio.gather(tokens(engine, first + [1], 4), tokens(engine, second + [2], 4))
        holder = next(
            i for i, r in enumerate(engine.replicas) if r.core.kv_manager.cached_prefix_tokens(second)
        )
        before = engine.replica_stats()
        await asyncio.gather(*(tokens(engine, second + [10 + i] * 9, 4) for i in range(4)))
        return holder, before, engine.replica_stats()

    try:
        holder, before, after = asyncio.run(main())
        other = 1 - holder
        assert engine.replicas[other].core.kv_manager.cached_prefix_tokens(second) == 0
        routed = [a["requests_routed"] - b["requests_routed"] for a, b in zip(after, before, strict=True)]
        hits = [a["prefix_cache_hits"] - b["prefix_cache_hits"] for a, b in zip(after, before, strict=True)]
        assert routed[holder] == 4 and routed[other] == 0
        assert hits[holder] == 4 * 256 and hits[other] == 0
    finally:
        engine.shutdown()


def test_an_engine_core_refuses_to_be_several_replicas(model_dir):
    with pytest.raises(ValueError, match="data_parallel_size=2: an engine core is one replica"):
        AsyncEngine(EngineConfig(model=model_dir, data_parallel_size=2))
