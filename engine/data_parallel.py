"""DataParallelEngine: `data_parallel_size` engine replicas behind AsyncEngine's interface.

Each replica is an AsyncEngine (its own engine thread, scheduler and KV cache; tensor-parallel
itself when `tensor_parallel_size` > 1). A request goes to the replica `choose_replica` picks
(engine/replica_router.py): the longest cached prefix of its prompt among replicas with room,
then the most free KV blocks. The servers call this exactly as they call an AsyncEngine.

On CPU, replicas of a native model without tensor parallelism share one copy of the weights (the
model's forward keeps no state, each replica has its own KV memory) and split the cores; on
CUDA, replica i runs on cuda:i and loads its own copy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import torch

from engine.async_engine import AsyncEngine
from engine.config import EngineConfig
from engine.errors import EngineError, InvalidRequestError
from engine.loader import LoadedModel, resolve_device
from engine.metrics import percentile
from engine.outputs import StreamChunk
from engine.replica_router import ReplicaLoad, choose_replica
from engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

_LATENCIES = {
    "ttft_p50_s": ("ttft", 50),
    "ttft_p99_s": ("ttft", 99),
    "itl_p50_s": ("inter_token_latency", 50),
    "itl_p99_s": ("inter_token_latency", 99),
}
_SAME = {"tensor_parallel_size"}  # settings every replica reports alike: not summed


@dataclass
class _Replica:
    """One replica and the router's own counts for it (touched only on the event loop's thread)."""

    engine: AsyncEngine
    routed: int = 0
    in_flight: int = 0
    pending_blocks: int = 0  # prompt blocks of routed requests whose first token has not come yet


class DataParallelEngine:
    """Serve with `config.data_parallel_size` replicas: `async for chunk in engine.generate(...)`."""

    def __init__(self, config: EngineConfig | None = None, *, loaded: LoadedModel | None = None) -> None:
        self.config = config or EngineConfig()
        count = self.config.data_parallel_size
        self._replicas: list[_Replica] = []
        try:
            for index in range(count):
                shared = (
                    self._replicas[0].engine.loaded if self._replicas and self._shares_weights() else None
                )
                replica_config = self._replica_config(index)
                engine = AsyncEngine(replica_config, loaded=loaded if index == 0 else shared)
                self._replicas.append(_Replica(engine))
        except BaseException:
            self.shutdown()
            raise
        first = self._replicas[0].engine
        self.loaded = first.loaded
        self.tokenizer = first.tokenizer
        self._owner: dict[str, _Replica] = {}
        self._stopped = False
        log.info(
            "data parallelism: %d replicas of %s%s",
            count,
            self.loaded.source.name,
            " sharing one copy of the weights" if self._shares_weights() else "",
        )

    def _replica_config(self, index: int) -> EngineConfig:
        config = self.config
        options: dict = {"data_parallel_size": 1}
        device = resolve_device(config.device)
        if device.type == "cuda":
            if config.tensor_parallel_size > 1:  # each replica's ranks would need their own block of devices
                raise ValueError(
                    "data_parallel_size > 1 with tensor_parallel_size > 1 is CPU-only for now: "
                    "on CUDA every tensor-parallel group uses cuda:0..N-1"
                )
            options["device"] = f"cuda:{index % torch.cuda.device_count()}"
        elif config.num_threads is None:  # the cores split between the replicas (and their ranks)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            options["num_threads"] = max(
                1, cores // (config.data_parallel_size * config.tensor_parallel_size)
            )
        return dataclasses.replace(config, **options)

    def _shares_weights(self) -> bool:
        first = self._replicas[0].engine.loaded
        return first.native and first.device.type == "cpu" and self.config.tensor_parallel_size == 1

    @property
    def replicas(self) -> list[AsyncEngine]:
        return [r.engine for r in self._replicas]

    @property
    def core(self):
        """The first replica's core (every replica has the same limits: max_model_len, vocabulary)."""
        return self._replicas[0].engine.core

    # --- requests -----------------------------------------------------------------------------

    async def generate(
        self, prompt: str | list[int], params: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[StreamChunk]:
        """Stream one request from the replica the router picks; as AsyncEngine.generate."""
        if self._stopped:
            raise EngineError("the engine is shut down")
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        request_id = request_id or f"req-{uuid.uuid4().hex}"
        if request_id in self._owner:
            raise InvalidRequestError(f"request id {request_id!r} is already in use")
        replica = self._route(ids)
        blocks = -(-len(ids) // self.config.block_size)
        replica.routed += 1
        replica.in_flight += 1
        replica.pending_blocks += blocks
        self._owner[request_id] = replica
        started = False
        try:
            async for chunk in replica.engine.generate(ids, params, request_id):
                if not started:
                    started = True
                    replica.pending_blocks -= blocks
                yield chunk
        finally:
            if not started:
                replica.pending_blocks -= blocks
            replica.in_flight -= 1
            self._owner.pop(request_id, None)

    def _route(self, ids: list[int]) -> _Replica:
        loads = []
        for replica in self._replicas:
            kv = replica.engine.core.kv_manager  # read from this thread without locks: a routing hint
            loads.append(
                ReplicaLoad(
                    kv.cached_prefix_tokens(ids),
                    kv.num_free_blocks - replica.pending_blocks,
                    replica.in_flight,
                )
            )
        max_seqs = self.config.max_num_seqs
        index = choose_replica(loads, -(-len(ids) // self.config.block_size), max_seqs, max(1, max_seqs // 4))
        return self._replicas[index]

    def check(self, prompt: str | list[int], params: SamplingParams) -> None:
        """Raise what generate() would raise for this request, now (every replica has the same limits)."""
        self._replicas[0].engine.check(prompt, params)

    def abort(self, request_id: str) -> None:
        replica = self._owner.get(request_id)
        if replica is not None:
            replica.engine.abort(request_id)

    async def run_on_engine_thread(self, fn, *args):
        """Run `fn(*args)` on the first replica's engine thread (see AsyncEngine.run_on_engine_thread)."""
        return await self._replicas[0].engine.run_on_engine_thread(fn, *args)

    # --- counters -----------------------------------------------------------------------------

    def replica_stats(self) -> list[dict[str, float]]:
        """Each replica's counters, plus the requests routed to it and those in flight there."""
        return [
            {**r.engine.stats(), "requests_routed": r.routed, "requests_in_flight": r.in_flight}
            for r in self._replicas
        ]

    def stats(self) -> dict[str, float]:
        """The replicas' counters summed; latency percentiles over their pooled samples."""
        per = [r.engine.stats() for r in self._replicas]
        total: dict[str, float] = {}
        for key in per[0]:
            if key in _SAME:
                total[key] = per[0][key]
            elif key not in _LATENCIES:
                total[key] = sum(s.get(key, 0) for s in per)
        for key, (series, q) in _LATENCIES.items():
            samples = [x for r in self._replicas for x in list(getattr(r.engine.core.metrics, series))]
            total[key] = percentile(samples, q)
        total["data_parallel_size"] = len(self._replicas)
        return total

    def shutdown(self) -> None:
        """Stop every replica; requests still running end with RequestFailedError."""
        self._stopped = True
        for replica in self._replicas:
            replica.engine.shutdown()


def create_serving_engine(config: EngineConfig) -> AsyncEngine | DataParallelEngine:
    """The engine a server runs for `config`: replicas behind a router when data_parallel_size > 1."""
    return DataParallelEngine(config) if config.data_parallel_size > 1 else AsyncEngine(config)
