"""Scheduler: hands out one token budget per step over running, then waiting, requests.

Plain Python (no torch). Prefill, chunked prefill, decode, prefix-cache hits and recompute after
preemption are one rule: a request is `num_computed_tokens` chasing `num_tokens`.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass

from engine.errors import InvalidRequestError
from engine.kv_cache import KVCacheManager
from engine.request import Request, RequestStatus
from engine.scheduler_output import ScheduledChunk, SchedulerOutput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-step limits: tokens computed in one forward, requests running at once."""

    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 32

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")


class Scheduler:
    """Decides, each step, which tokens of which requests to compute and in which KV blocks.

    Running requests are kept oldest first. Admission is FCFS and preempted requests go back to the
    front of the waiting queue, so every running request is older than every waiting one.

    The engine may append a sampled token to `request.output_token_ids` before or after calling
    `update_from_output` for that step: both only touch tokens below `num_computed_tokens`.
    """

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager) -> None:
        self.config = config
        self.kv = kv
        self._requests: dict[str, Request] = {}
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._arrivals = itertools.count()

    def add_request(self, request: Request) -> None:
        if request.request_id in self._requests:
            raise InvalidRequestError(f"request id {request.request_id!r} is already in use")
        needed = self.kv.blocks_needed(request.max_total_tokens)
        if needed > self.kv.num_blocks:
            raise InvalidRequestError(
                f"request {request.request_id!r} needs {needed} KV blocks of {self.kv.block_size} tokens "
                f"({request.max_total_tokens} tokens: prompt + max_tokens) but the cache has only "
                f"{self.kv.num_blocks}; shorten the prompt or max_tokens"
            )
        request.arrival = next(self._arrivals)
        request.status = RequestStatus.WAITING
        self._requests[request.request_id] = request
        self._waiting.append(request)

    def schedule(self) -> SchedulerOutput:
        budget = self.config.max_num_batched_tokens
        chunks: list[ScheduledChunk] = []
        preempted: list[str] = []

        i = 0
        while i < len(self._running) and budget > 0:
            request = self._running[i]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self._allocate_or_preempt(request, num_new, preempted):
                break
            chunks.append(self._chunk(request, num_new))
            budget -= num_new
            i += 1

        while (
            not preempted and self._waiting and budget > 0 and len(self._running) < self.config.max_num_seqs
        ):
            request = self._waiting[0]
            num_cached = self.kv.get_computed_blocks(request)
            request.num_computed_tokens = num_cached
            num_new = min(request.num_tokens - num_cached, budget)
            if not self.kv.allocate_slots(request, num_new):
                self.kv.free(request)
                request.num_computed_tokens = 0
                break
            request.num_cached_tokens = num_cached
            request.status = RequestStatus.RUNNING
            self._waiting.popleft()
            self._running.append(request)
            chunks.append(self._chunk(request, num_new))
            budget -= num_new

        return SchedulerOutput(chunks=chunks, preempted=preempted)

    def _allocate_or_preempt(self, request: Request, num_new: int, preempted: list[str]) -> bool:
        """Allocate, preempting the newest running requests until it fits; False if `request` went too."""
        while not self.kv.allocate_slots(request, num_new):
            victim = self._running.pop()
            self._preempt(victim)
            preempted.append(victim.request_id)
            if victim is request:
                return False
        return True

    def _chunk(self, request: Request, num_new: int) -> ScheduledChunk:
        start = request.num_computed_tokens
        return ScheduledChunk(
            request_id=request.request_id,
            token_ids=request.all_token_ids[start : start + num_new],
            start_position=start,
            block_table=list(self.kv.block_table(request.request_id)),
            sample=start + num_new == request.num_tokens,
        )

    def _preempt(self, request: Request) -> None:
        """Send a running request back to the front of the queue; it is recomputed from token 0."""
        self.kv.free(request)
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        request.status = RequestStatus.WAITING
        self._waiting.appendleft(request)
        logger.info(
            "preempted request %s (%d tokens) for lack of KV blocks; %d running, %d waiting",
            request.request_id,
            request.num_tokens,
            len(self._running),
            len(self._waiting),
        )

    def update_from_output(self, output: SchedulerOutput) -> None:
        """Advance each scheduled request past its computed chunk; register newly full blocks."""
        for chunk in output.chunks:
            request = self._requests.get(chunk.request_id)
            if request is None or request.status is not RequestStatus.RUNNING:
                continue  # finished (e.g. aborted) while its step ran
            request.num_computed_tokens += len(chunk.token_ids)
            self.kv.cache_full_blocks(request)

    def finish_request(self, request_id: str) -> Request | None:
        """Stop a request wherever it is and free its blocks; None if the id is unknown or done."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return None
        if request.status is RequestStatus.RUNNING:
            self._running.remove(request)
        else:
            self._waiting.remove(request)
        self.kv.free(request)
        request.status = RequestStatus.FINISHED
        return request

    def get_request(self, request_id: str) -> Request | None:
        return self._requests.get(request_id)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    def running_ids(self) -> list[str]:
        return [r.request_id for r in self._running]
