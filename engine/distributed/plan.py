"""TensorParallelPlan: which query/KV heads, MLP columns and vocabulary rows each rank holds.

Plain arithmetic (no torch): every rank computes the same plan from the model's shape, so the
plan never travels between processes.

Heads are split by KV group, never inside one: a rank holds whole KV heads and exactly the query
heads that read them, so attention needs no communication. When the KV heads do not divide
evenly (SmolLM2-135M: 9 query / 3 KV heads over 2 ranks), the first ranks take one group more
(6/2 and 3/1): uneven but exact. With fewer KV heads than ranks, the query heads are split evenly
and each rank keeps a copy of the one KV head its queries read (as vLLM does).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import TensorParallelError


def split_evenly(total: int, parts: int) -> list[range]:
    """`total` items in `parts` contiguous ranges whose sizes differ by at most one (larger first)."""
    base, extra = divmod(total, parts)
    ranges, start = [], 0
    for rank in range(parts):
        size = base + (1 if rank < extra else 0)
        ranges.append(range(start, start + size))
        start += size
    return ranges


@dataclass(frozen=True)
class RankShard:
    """What one rank holds: head indices, MLP intermediate columns and vocabulary rows (all contiguous)."""

    rank: int
    q_heads: range
    kv_heads: range
    intermediate: range
    vocab: range


@dataclass(frozen=True)
class TensorParallelPlan:
    """The split of one model over `world_size` ranks."""

    world_size: int
    shards: tuple[RankShard, ...]

    @classmethod
    def build(
        cls, num_heads: int, num_kv_heads: int, intermediate_size: int, vocab_size: int, world_size: int
    ) -> TensorParallelPlan:
        """The plan for a model of this shape; TensorParallelError when it cannot be split that way."""
        if world_size < 1:
            raise TensorParallelError(f"invalid tensor_parallel_size={world_size}: must be >= 1")
        q_heads, kv_heads = _split_heads(num_heads, num_kv_heads, world_size)
        if intermediate_size < world_size:
            raise TensorParallelError(
                f"tensor_parallel_size={world_size} exceeds the MLP width ({intermediate_size} columns)"
            )
        intermediate = split_evenly(intermediate_size, world_size)
        vocab = split_evenly(vocab_size, world_size)
        shards = tuple(
            RankShard(rank, q, kv, i, v)
            for rank, (q, kv, i, v) in enumerate(zip(q_heads, kv_heads, intermediate, vocab, strict=True))
        )
        return cls(world_size, shards)

    @property
    def vocab_sizes(self) -> list[int]:
        """Logit columns of each rank, in rank order (their concatenation is the whole vocabulary)."""
        return [len(s.vocab) for s in self.shards]

    def describe(self) -> str:
        """One line for the log: heads, MLP columns and vocabulary rows per rank."""
        return "; ".join(
            f"rank {s.rank}: {len(s.q_heads)} query / {len(s.kv_heads)} KV heads, "
            f"{len(s.intermediate)} MLP columns, {len(s.vocab)} vocab rows"
            for s in self.shards
        )


def _split_heads(num_heads: int, num_kv_heads: int, world_size: int) -> tuple[list[range], list[range]]:
    group = num_heads // num_kv_heads
    if num_kv_heads >= world_size:
        kv = split_evenly(num_kv_heads, world_size)
        return [range(r.start * group, r.stop * group) for r in kv], kv
    if world_size % num_kv_heads == 0 and num_heads % world_size == 0:
        q = split_evenly(num_heads, world_size)
        return q, [range(r.start // group, r.start // group + 1) for r in q]
    raise TensorParallelError(
        f"tensor_parallel_size={world_size} cannot split {num_heads} query heads "
        f"over {num_kv_heads} KV heads: "
        f"use at most {num_kv_heads} ranks, or a multiple of {num_kv_heads} that divides {num_heads}"
    )
