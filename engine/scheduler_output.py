"""SchedulerOutput: what one engine step computes; the model runner's only input."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScheduledChunk:
    """`token_ids` of one request to compute this step, at positions start_position.. onwards.

    `block_table` lists the KV blocks that hold the request's positions 0 .. start_position +
    len(token_ids) - 1. `sample` is True when the chunk reaches the end of the request's tokens,
    so the step must produce its next token (False for a non-final chunk of a long prompt).
    """

    request_id: str
    token_ids: list[int]
    start_position: int
    block_table: list[int]
    sample: bool


@dataclass(frozen=True)
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)  # request ids sent back to waiting this step

    @property
    def num_batched_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks
