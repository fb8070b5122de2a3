"""Request: the scheduler's view of one generation (plain Python: no torch, no tokenizer)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # queued, or preempted and waiting to be recomputed
    RUNNING = "running"  # holds KV blocks; prefilling (possibly in chunks) or decoding
    FINISHED = "finished"  # stopped, aborted or failed; holds no blocks


@dataclass(eq=False)
class Request:
    """Token ids and progress of one request.

    `num_computed_tokens` counts the tokens whose keys/values are in the KV cache; the request
    needs `num_tokens - num_computed_tokens` more tokens computed before its next token can be
    sampled. Prefill, chunked prefill, decode and prefix-cache hits are all this one number.
    `output_token_ids` is shared with the sampler state (the engine appends each sampled token).
    """

    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    arrival: int = 0  # FCFS order; set by the scheduler
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache at the last admission
    num_preemptions: int = 0
    status: RequestStatus = RequestStatus.WAITING

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def max_total_tokens(self) -> int:
        """The most tokens this request can ever hold in the cache."""
        return len(self.prompt_token_ids) + self.max_tokens
