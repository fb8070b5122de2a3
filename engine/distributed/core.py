"""TensorParallelCore: an EngineCore whose model is split over `tensor_parallel_size` processes (rank 0).

Rank 0 schedules, samples and detokenizes exactly as EngineCore does; only its runner differs
(TensorParallelRunner). The fault contract is EngineCore's — a failed step fails its requests
with an "error" chunk, the engine is rebuilt, later requests succeed — with two differences:

- a fault inside a tensor-parallel forward fails every request of that step: the ranks may be
  waiting in different collectives, so a chunk cannot be re-run alone to find a culprit without
  restarting the workers each time;
- rebuilding restarts the workers (new processes, new group). A worker found dead between steps
  fails only the requests whose keys/values it held (those with computed tokens); the others are
  recomputed on the fresh workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from engine.config import EngineConfig
from engine.core import EngineCore, configure_threads
from engine.distributed.group import TensorParallelGroup
from engine.distributed.runner import TensorParallelRunner
from engine.distributed.sharding import load_dense, plan_for, shard_model
from engine.errors import EngineStepError, TensorParallelError
from engine.loader import LoadedModel
from engine.outputs import StreamChunk
from engine.scheduler_output import SchedulerOutput

log = logging.getLogger(__name__)


def tensor_parallel_config(config: EngineConfig) -> EngineConfig:
    """What a split engine runs with: dense weights (`isq` unset means dense here; a quantizing `isq` is
    refused) and eager decode steps (a compiled step would trace through the collectives)."""
    if config.isq not in (None, "none"):
        raise TensorParallelError(
            f"--tensor-parallel-size {config.tensor_parallel_size} splits dense weights, "
            f"but --isq {config.isq} quantizes them: pass --isq none"
        )
    if config.topology is not None:
        raise TensorParallelError(
            f"--tensor-parallel-size {config.tensor_parallel_size} places every layer on every rank; "
            f"--topology {config.topology} places layers itself: use one or the other"
        )
    return dataclasses.replace(config, isq="none", compile=False, cuda_graphs=False)


def threads_per_rank(config: EngineConfig) -> int:
    """The CPU threads of each rank: --threads if given, else this process's cores split between ranks."""
    if config.num_threads is not None:
        return config.num_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // config.tensor_parallel_size)


class TensorParallelCore(EngineCore):
    """EngineCore over a model split across processes; `close()` stops the workers."""

    @classmethod
    def create(cls, config: EngineConfig, loaded: LoadedModel | None = None) -> TensorParallelCore:
        """Start the workers first (they load while this process does), then shard rank 0's model and connect.

        A `loaded` model given here is sharded in place: it must be dense and not used elsewhere.
        """
        config = tensor_parallel_config(config)
        threads = threads_per_rank(config)
        configure_threads(threads)
        group = TensorParallelGroup(config, threads)
        try:
            if loaded is None:
                loaded = load_dense(config)
            core = cls(loaded, config, group)
            if config.warmup:
                core.warmup()
        except BaseException:
            group.close()
            raise
        return core

    def __init__(self, loaded: LoadedModel, config: EngineConfig, group: TensorParallelGroup) -> None:
        self.tp = group
        group.plan = plan_for(loaded.module, config.tensor_parallel_size)
        shard_model(loaded.module, group.plan, 0, group.comm)
        log.info(
            "tensor parallelism over %d processes: %s", config.tensor_parallel_size, group.plan.describe()
        )
        self.restart_error: Exception | None = None
        super().__init__(loaded, config)

    def _build(self) -> None:
        """Fresh scheduler and KV memory as EngineCore's; first connect or restart the workers when needed."""
        if self.tp.broken:
            if self.tp.num_blocks is None:
                self.tp.connect(self.num_blocks)  # at start-up a failure is the caller's error
            else:
                try:
                    self.tp.restart()
                    self.restart_error = None
                except Exception as exc:  # noqa: BLE001 - kept: the next step fails its requests with it
                    self.restart_error = exc
                    log.error("tensor-parallel workers could not be restarted: %s", exc)
        super()._build()
        self.runner = TensorParallelRunner(self.runner, self.tp)

    def step(self) -> list[StreamChunk]:
        if self.tp.broken or self.tp.dead_worker() is not None:
            return self._rebuild_before_step()
        return super().step()

    def _rebuild_before_step(self) -> list[StreamChunk]:
        """A worker died between steps (or the last restart failed): restart before running anything.

        Requests with computed tokens lost the keys/values the dead worker held and fail; the rest
        are recomputed. While restarts fail, every request fails with the reason.
        """
        if self.restart_error is not None:
            cause, lost = self.restart_error, list(self.sequences)
        else:
            cause = self.tp.dead_worker() or TensorParallelError("the tensor-parallel group is down")
            lost = [rid for rid, seq in self.sequences.items() if seq.request.num_computed_tokens > 0]
        self.tp.broken = True
        return self.recover(EngineStepError(lost, cause))

    def _culprits(self, output: SchedulerOutput) -> list[str]:
        if self.tp.broken:  # the forward failed with the ranks out of step: the whole step is to blame
            return [c.request_id for c in output.chunks]
        return super()._culprits(output)

    def close(self) -> None:
        self.tp.close()

    def stats(self) -> dict[str, float]:
        return {
            **super().stats(),
            "tensor_parallel_size": self.tp.world_size,
            "tensor_parallel_restarts": self.tp.restarts,
        }
