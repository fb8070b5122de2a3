"""choose_replica: which data-parallel replica serves a request (plain Python, no torch).

The rule, in order:
1. only replicas with room: enough free KV blocks for the prompt, fewer requests in flight than
   `max_num_seqs`, and not more than `balance_slack` requests ahead of the least busy replica
   (so a popular prefix cannot pile every request onto one replica while another idles);
   when none has room, every replica is a candidate;
2. the longest prefix of the prompt already in the replica's prefix cache (computed once, reused);
3. the most free KV blocks (free now, minus those promised to requests routed there not yet started);
4. the fewest requests in flight, then the lowest index.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaLoad:
    """What the router knows of one replica when a request arrives (read without locks: a snapshot)."""

    cached_tokens: int  # leading prompt tokens its prefix cache holds
    free_blocks: int  # free KV blocks minus those of routed requests that have not started
    in_flight: int  # requests routed to it that have not finished


def choose_replica(
    loads: list[ReplicaLoad], blocks_needed: int, max_num_seqs: int, balance_slack: int
) -> int:
    """The index of the replica to serve a request whose prompt needs `blocks_needed` KV blocks."""
    if not loads:
        raise ValueError("no replicas to choose from")
    least_busy = min(load.in_flight for load in loads)

    def has_room(load: ReplicaLoad) -> bool:
        return (
            load.free_blocks >= blocks_needed
            and load.in_flight < max_num_seqs
            and load.in_flight <= least_busy + balance_slack
        )

    candidates = [i for i, load in enumerate(loads) if has_room(load)] or list(range(len(loads)))
    return max(
        candidates, key=lambda i: (loads[i].cached_tokens, loads[i].free_blocks, -loads[i].in_flight, -i)
    )
