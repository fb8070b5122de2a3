"""KVCacheManager: block allocation, reference counts, the prefix cache and LRU eviction."""

from __future__ import annotations

import random

import pytest

from engine import kv_cache
from engine.kv_cache import KVCacheManager, KVCacheStats
from engine.request import Request


def make_request(request_id: str, tokens: list[int], max_tokens: int = 8) -> Request:
    return Request(request_id=request_id, prompt_token_ids=list(tokens), max_tokens=max_tokens)


def compute(kv: KVCacheManager, request: Request, num_tokens: int | None = None) -> None:
    """Do what the scheduler and runner do for one step: allocate, compute, register full blocks."""
    n = request.num_tokens - request.num_computed_tokens if num_tokens is None else num_tokens
    assert kv.allocate_slots(request, n)
    request.num_computed_tokens += n
    kv.cache_full_blocks(request)


def test_allocation_grows_across_block_boundaries():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    r = make_request("a", list(range(4)))
    assert kv.allocate_slots(r, 4)
    assert len(kv.block_table("a")) == 1
    r.num_computed_tokens = 4
    assert kv.allocate_slots(r, 1)  # the 5th token opens a second block
    assert len(kv.block_table("a")) == 2
    r.num_computed_tokens = 5
    assert kv.allocate_slots(r, 3)  # 8 tokens still fit in two blocks
    assert len(kv.block_table("a")) == 2
    assert kv.num_used_blocks == 2 and kv.num_free_blocks == 6
    assert kv.usage == pytest.approx(0.25)
    kv.check_invariants()


def test_allocation_fails_without_changing_anything():
    kv = KVCacheManager(num_blocks=2, block_size=4)
    r = make_request("a", list(range(12)))
    assert not kv.allocate_slots(r, 12)
    assert kv.block_table("a") == [] and kv.num_free_blocks == 2
    kv.check_invariants()


def test_free_returns_blocks_to_the_pool():
    kv = KVCacheManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
    r = make_request("a", list(range(10)))
    compute(kv, r)
    assert kv.num_used_blocks == 3
    kv.free(r)
    assert kv.num_used_blocks == 0 and kv.block_table("a") == []
    kv.free(r)  # freeing twice is harmless
    kv.check_invariants()


def test_blocks_needed_rounds_up():
    kv = KVCacheManager(num_blocks=4, block_size=16)
    assert [kv.blocks_needed(n) for n in (0, 1, 16, 17, 32)] == [0, 1, 1, 2, 2]


@pytest.mark.parametrize("kwargs", [{"num_blocks": 0}, {"num_blocks": 4, "block_size": 0}])
def test_rejects_empty_pool_or_blocks(kwargs):
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        KVCacheManager(**kwargs)


def test_prefix_hit_after_request_finished_reuses_its_blocks():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    first = make_request("a", list(range(10)))
    compute(kv, first)
    first_blocks = list(kv.block_table("a"))
    kv.free(first)

    second = make_request("b", list(range(8)) + [99, 98, 97])
    assert kv.get_computed_blocks(second) == 8
    assert kv.block_table("b") == first_blocks[:2]
    assert kv.stats() == KVCacheStats(num_blocks=8, used_blocks=2, prefix_queries=11, prefix_hits=8)
    kv.check_invariants()


def test_partial_last_block_is_never_cached():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    compute(kv, make_request("a", list(range(7))))
    # Same 7 tokens plus one: the second block would be full now, but only 4 tokens were cached.
    assert kv.get_computed_blocks(make_request("b", list(range(8)) + [1])) == 4


def test_blocks_register_only_once_their_tokens_are_computed():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    a = make_request("a", list(range(8)))
    compute(kv, a, 6)  # a chunk that ends inside the second block
    assert kv.get_computed_blocks(make_request("b", list(range(9)))) == 4


def test_never_returns_every_token():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    a = make_request("a", list(range(8)))
    compute(kv, a)
    cached = list(kv.block_table("a"))
    kv.free(a)
    again = make_request("b", list(range(8)))
    assert kv.get_computed_blocks(again) == 4  # the last block is recomputed for its logits
    again.num_computed_tokens = 4
    assert kv.allocate_slots(again, 4)
    # ... into a fresh block: a cached block is never written again.
    table = kv.block_table("b")
    assert table[0] == cached[0] and table[1] != cached[1]
    kv.check_invariants()


def test_preempted_request_looks_up_its_output_tokens_too():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    r = make_request("a", [1, 2, 3, 4, 5, 6])
    compute(kv, r)
    r.output_token_ids += [7, 8, 9]
    compute(kv, r, 2)  # tokens 7 and 8 fill the second block; 9 is not computed yet
    kv.free(r)
    r.num_computed_tokens = 0
    assert kv.get_computed_blocks(r) == 8


def test_prefix_caching_off_never_hits():
    kv = KVCacheManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a = make_request("a", list(range(9)))
    compute(kv, a)
    kv.free(a)
    assert kv.get_computed_blocks(make_request("b", list(range(9)))) == 0
    assert kv.num_free_blocks == 8 and kv.stats().prefix_queries == 0


def test_two_requests_share_a_prefix_with_counted_references():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    a = make_request("a", list(range(9)))
    compute(kv, a)
    b = make_request("b", list(range(8)) + [50, 51])
    assert kv.get_computed_blocks(b) == 8
    b.num_computed_tokens = 8
    assert kv.allocate_slots(b, 2)
    shared = kv.block_table("a")[:2]
    assert kv.block_table("b")[:2] == shared
    assert kv.num_used_blocks == 4  # 2 shared + 1 tail each
    kv.check_invariants()
    kv.free(a)
    assert kv.num_used_blocks == 3  # the shared blocks still belong to b
    kv.check_invariants()
    kv.free(b)
    assert kv.num_used_blocks == 0
    kv.check_invariants()


def test_eviction_takes_the_least_recently_freed_block_and_forgets_it():
    kv = KVCacheManager(num_blocks=3, block_size=2)
    requests = [make_request(name, [i, i, 0]) for i, name in enumerate("abc")]
    for r in requests:
        compute(kv, r, 2)  # one full, cached block each
    for r in requests:
        kv.free(r)  # freed a, b, c: a is the least recently freed
    assert kv.num_free_blocks == 3
    taker = make_request("d", [7, 7, 7])
    assert kv.allocate_slots(taker, 2)  # evicts a's block
    kv.check_invariants()
    assert kv.get_computed_blocks(make_request("a2", [0, 0, 0])) == 0
    assert kv.get_computed_blocks(make_request("b2", [1, 1, 0])) == 2
    assert kv.get_computed_blocks(make_request("c2", [2, 2, 0])) == 2
    kv.check_invariants()


def test_hit_takes_a_block_out_of_the_evictable_lru():
    kv = KVCacheManager(num_blocks=2, block_size=2)
    a = make_request("a", [5, 5, 1])
    compute(kv, a, 2)
    kv.free(a)
    b = make_request("b", [5, 5, 2])
    assert kv.get_computed_blocks(b) == 2
    other = make_request("c", [9, 9, 9, 9])
    assert not kv.allocate_slots(other, 4)  # only one block left: the hit block is not evictable
    kv.check_invariants()


def test_hash_collision_never_returns_different_tokens(monkeypatch):
    monkeypatch.setattr(kv_cache, "block_hash", lambda parent_key, tokens: 0)
    kv = KVCacheManager(num_blocks=16, block_size=4)
    a = make_request("a", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    compute(kv, a)
    kv.free(a)
    assert kv.get_computed_blocks(make_request("b", [5, 6, 7, 8, 1])) == 0
    hit = make_request("c", [1, 2, 3, 4, 0, 0])
    assert kv.get_computed_blocks(hit) == 4
    kv.check_invariants()


def test_hash_collision_with_equal_tokens_at_another_position_is_a_miss(monkeypatch):
    monkeypatch.setattr(kv_cache, "block_hash", lambda parent_key, tokens: 0)
    kv = KVCacheManager(num_blocks=16, block_size=4)
    a = make_request("a", [7] * 8 + [1])
    compute(kv, a)
    kv.free(a)
    # Block 1 has the same tokens and key as block 0, but block 0's KV is for positions 0-3.
    b = make_request("b", [7] * 8 + [2])
    assert kv.get_computed_blocks(b) == 4
    kv.check_invariants()


@pytest.mark.parametrize("constant_hash", [False, True])
def test_random_operations_keep_invariants_and_cached_content(monkeypatch, constant_hash):
    """Fuzz: every hit must point at blocks whose (simulated) KV holds exactly the request's tokens."""
    if constant_hash:
        monkeypatch.setattr(kv_cache, "block_hash", lambda parent_key, tokens: 0)
    rng = random.Random(1234)
    block_size = 2
    kv = KVCacheManager(num_blocks=12, block_size=block_size)
    slots: dict[tuple[int, int], int] = {}  # (block, offset) -> token whose KV the slot holds
    prefixes = [[rng.randrange(3) for _ in range(rng.randrange(1, 7))] for _ in range(4)]
    live: list[Request] = []
    for step in range(3000):
        op = rng.random()
        if op < 0.3 and len(live) < 6:
            tokens = rng.choice(prefixes) + [rng.randrange(3) for _ in range(rng.randrange(1, 5))]
            r = make_request(f"r{step}", tokens)
            hit = kv.get_computed_blocks(r)
            assert hit % block_size == 0 and hit < r.num_tokens
            table = kv.block_table(r.request_id)
            for p in range(hit):
                assert slots[(table[p // block_size], p % block_size)] == tokens[p]
            r.num_computed_tokens = hit
            live.append(r)
        elif op < 0.75 and live:
            r = rng.choice(live)
            remaining = r.num_tokens - r.num_computed_tokens
            if remaining == 0:
                r.output_token_ids.append(rng.randrange(3))
                remaining = 1
            n = rng.randint(1, remaining)
            if kv.allocate_slots(r, n):
                table = kv.block_table(r.request_id)
                for p in range(r.num_computed_tokens, r.num_computed_tokens + n):
                    slots[(table[p // block_size], p % block_size)] = r.all_token_ids[p]
                r.num_computed_tokens += n
                kv.cache_full_blocks(r)
        elif live:
            r = live.pop(rng.randrange(len(live)))
            kv.free(r)
        kv.check_invariants()
    for r in live:
        kv.free(r)
    kv.check_invariants()
    assert kv.num_used_blocks == 0
    stats = kv.stats()
    assert 0 < stats.prefix_hits < stats.prefix_queries


def test_cached_prefix_tokens_counts_whole_cached_blocks_and_changes_nothing():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    r = make_request("a", list(range(10)))
    compute(kv, r)
    kv.free(r)
    before = (kv.stats(), kv.num_free_blocks)
    assert kv.cached_prefix_tokens(list(range(10))) == 8  # two full blocks; the partial third is not cached
    assert kv.cached_prefix_tokens([0, 1, 2, 3, 9, 9, 9, 9]) == 4
    assert kv.cached_prefix_tokens([7, 1, 2, 3]) == 0
    assert (kv.stats(), kv.num_free_blocks) == before
    assert KVCacheManager(8, 4, enable_prefix_caching=False).cached_prefix_tokens(list(range(10))) == 0
    kv.check_invariants()
