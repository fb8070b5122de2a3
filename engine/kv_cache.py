"""KVCacheManager: the paged KV block pool, per-request block tables and the prefix cache.

Plain Python (no torch): it hands out block ids; the model runner owns the tensors they index.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.request import Request

_ROOT_KEY = 0  # the "parent key" of a request's first block


def block_hash(parent_key: int, tokens: tuple[int, ...]) -> int:
    """The prefix-cache key of a full block: it depends on the block's tokens and every block before it."""
    return hash((parent_key, tokens))


@dataclass(frozen=True)
class KVCacheStats:
    """A snapshot of the pool for metrics; prefix counters are in tokens."""

    num_blocks: int
    used_blocks: int
    prefix_queries: int
    prefix_hits: int


@dataclass(frozen=True)
class _CachedBlock:
    """One prefix-cache entry.

    `uid` is never reused; an entry matches a lookup only if its parent's uid is the one the lookup
    matched just before, so by induction the whole prefix is equal, not merely its hashes.
    """

    key: int
    block_id: int
    tokens: tuple[int, ...]
    uid: int
    parent_uid: int | None


@dataclass
class _Table:
    blocks: list[int] = field(default_factory=list)
    # The cache entry holding the content of each leading full block (its own or an identical one's):
    # the parent of the next block registered.
    chain: list[_CachedBlock] = field(default_factory=list)
    # A key collision with different content stops registering this request's later blocks.
    chain_broken: bool = False


class KVCacheManager:
    """Reference-counted blocks of `block_size` token slots, shared between requests by prefix.

    Every block is in exactly one place: referenced by >= 1 block table, on the free list (never
    cached), or in the evictable LRU (cached, ref 0, reusable by a prefix hit until evicted).
    """

    def __init__(self, num_blocks: int, block_size: int = 16, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # least recently freed first
        self._cache: dict[int, _CachedBlock] = {}  # key -> entry
        self._entry_of_block: dict[int, _CachedBlock] = {}
        self._tables: dict[str, _Table] = {}
        self._uids = itertools.count()
        self._prefix_queries = 0
        self._prefix_hits = 0

    # -- sizes -------------------------------------------------------------------------------

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take: never-cached free ones plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def stats(self) -> KVCacheStats:
        return KVCacheStats(self.num_blocks, self.num_used_blocks, self._prefix_queries, self._prefix_hits)

    def block_table(self, request_id: str) -> list[int]:
        table = self._tables.get(request_id)
        return table.blocks if table is not None else []

    # -- prefix cache ------------------------------------------------------------------------

    def get_computed_blocks(self, request: Request) -> int:
        """Attach the longest cached run of the request's full blocks; return the tokens they cover.

        At least one token is always left to compute, since the step needs the last token's logits.
        """
        if not self.enable_prefix_caching:
            return 0
        held = self._tables.get(request.request_id)
        if held is not None and held.blocks:
            raise RuntimeError(f"request {request.request_id!r} already holds blocks {held.blocks}")
        tokens = request.all_token_ids
        bs = self.block_size
        hits = self._cached_run(tokens)
        if hits and len(hits) * bs == len(tokens):
            hits.pop()
        for entry in hits:
            if self._ref[entry.block_id] == 0:
                del self._evictable[entry.block_id]
            self._ref[entry.block_id] += 1
        self._tables[request.request_id] = _Table(blocks=[e.block_id for e in hits], chain=list(hits))
        num_hit_tokens = len(hits) * bs
        self._prefix_queries += len(tokens)
        self._prefix_hits += num_hit_tokens
        return num_hit_tokens

    def cached_prefix_tokens(self, token_ids: Sequence[int]) -> int:
        """How many leading tokens of `token_ids` the prefix cache holds now, in whole blocks.

        Read-only (no counters, no references): a data-parallel router asks each replica this.
        """
        if not self.enable_prefix_caching:
            return 0
        return len(self._cached_run(token_ids)) * self.block_size

    def _cached_run(self, tokens: Sequence[int]) -> list[_CachedBlock]:
        """The cache entries of the longest run of `tokens`' leading full blocks that are cached."""
        bs = self.block_size
        hits: list[_CachedBlock] = []
        key, parent_uid = _ROOT_KEY, None
        for start in range(0, len(tokens) - bs + 1, bs):
            block_tokens = tuple(tokens[start : start + bs])
            key = block_hash(key, block_tokens)
            entry = self._cache.get(key)
            if entry is None or entry.tokens != block_tokens or entry.parent_uid != parent_uid:
                break
            hits.append(entry)
            parent_uid = entry.uid
        return hits

    def cache_full_blocks(self, request: Request) -> None:
        """Register the request's blocks that computed tokens have filled since the last call."""
        table = self._tables.get(request.request_id)
        if not self.enable_prefix_caching or table is None or table.chain_broken:
            return
        bs = self.block_size
        num_full = min(request.num_computed_tokens // bs, len(table.blocks))
        tokens = request.all_token_ids
        for i in range(len(table.chain), num_full):
            parent = table.chain[-1] if table.chain else None
            block_tokens = tuple(tokens[i * bs : (i + 1) * bs])
            key = block_hash(parent.key if parent else _ROOT_KEY, block_tokens)
            parent_uid = parent.uid if parent else None
            existing = self._cache.get(key)
            if existing is None:
                entry = _CachedBlock(key, table.blocks[i], block_tokens, next(self._uids), parent_uid)
                self._cache[key] = entry
                self._entry_of_block[entry.block_id] = entry
                table.chain.append(entry)
            elif existing.tokens == block_tokens and existing.parent_uid == parent_uid:
                # Another request computed the same prefix first; this block stays uncached.
                table.chain.append(existing)
            else:
                table.chain_broken = True
                return

    # -- allocation --------------------------------------------------------------------------

    def allocate_slots(self, request: Request, num_new_tokens: int) -> bool:
        """Grow the table to cover num_computed_tokens + num_new_tokens; False (no change) if short."""
        table = self._tables.get(request.request_id)
        held = len(table.blocks) if table is not None else 0
        needed = self.blocks_needed(request.num_computed_tokens + num_new_tokens) - held
        if needed > self.num_free_blocks:
            return False
        if table is None:
            table = self._tables[request.request_id] = _Table()
        for _ in range(needed):
            block_id = self._free.popleft() if self._free else self._evict()
            self._ref[block_id] = 1
            table.blocks.append(block_id)
        return True

    def _evict(self) -> int:
        block_id, _ = self._evictable.popitem(last=False)
        entry = self._entry_of_block.pop(block_id)
        del self._cache[entry.key]
        return block_id

    def free(self, request: Request) -> None:
        """Drop the request's table; blocks nobody references go back to the pool."""
        table = self._tables.pop(request.request_id, None)
        if table is None:
            return
        # Tail first, so a prefix's later blocks are evicted before the blocks it starts with.
        for block_id in reversed(table.blocks):
            self._ref[block_id] -= 1
            if self._ref[block_id] == 0:
                if block_id in self._entry_of_block:
                    self._evictable[block_id] = None
                else:
                    self._free.append(block_id)

    # -- checking ----------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise AssertionError if any block is lost, doubly owned, or miscounted (for tests)."""
        counts = [0] * self.num_blocks
        for request_id, table in self._tables.items():
            if len(set(table.blocks)) != len(table.blocks):
                raise AssertionError(f"table of {request_id!r} repeats a block: {table.blocks}")
            for block_id in table.blocks:
                counts[block_id] += 1
        if counts != self._ref:
            raise AssertionError(f"ref counts {self._ref} differ from table occurrences {counts}")
        free, evictable = list(self._free), list(self._evictable)
        referenced = [b for b in range(self.num_blocks) if counts[b] > 0]
        everywhere = free + evictable + referenced
        if sorted(everywhere) != list(range(self.num_blocks)):
            raise AssertionError(
                f"blocks not in exactly one place: free={free} evictable={evictable} used={referenced}"
            )
        if any(b in self._entry_of_block for b in free):
            raise AssertionError("a cached block is on the free list")
        if any(b not in self._entry_of_block for b in evictable):
            raise AssertionError("an uncached block is in the evictable LRU")
        if len(self._cache) != len(self._entry_of_block):
            raise AssertionError("a block appears more than once in the prefix cache")
        for key, entry in self._cache.items():
            if entry.key != key or self._entry_of_block.get(entry.block_id) is not entry:
                raise AssertionError(f"prefix-cache entry {entry} is inconsistent")
