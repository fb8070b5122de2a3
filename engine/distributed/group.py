"""TensorParallelGroup: rank 0's side of a tensor-parallel group: store, workers, each step, restarts.

Rank 0 hosts the store, starts the local workers (ranks 1..N-1, `python -m engine.distributed.worker`,
each a process of its own with `threads` CPU threads), and joins them in a Communicator. A step
broadcasts the SchedulerOutput, runs rank 0's shard, and gathers the logits.

Failure: a worker that exits is seen before a step (its process has exited) or during one (gloo
reports the closed connection at once; a hung one hits the step timeout). Either way the group
is marked broken; `restart` stops every worker of the old generation (by pid), starts a new
generation and reconnects. The owner (TensorParallelCore) decides which requests that fails.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from engine.config import EngineConfig
from engine.distributed.communicator import Communicator
from engine.distributed.plan import TensorParallelPlan
from engine.distributed.rendezvous import GENERATION_KEY, Rendezvous, WorkerJob, generation_prefix
from engine.errors import CollectiveError, TensorParallelError, WorkerDiedError
from engine.loader import resolve_device
from engine.scheduler_output import SchedulerOutput

log = logging.getLogger(__name__)

STEP_TIMEOUT_S = 120.0  # one collective of a step; a worker that hangs longer fails the step
START_TIMEOUT_S = 900.0  # workers load the model before joining: allow for big checkpoints
_STOP_GRACE_S = 5.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where `engine` imports from, for the workers


class TensorParallelGroup:
    """Rank 0's handle on the workers of one tensor-parallel engine."""

    def __init__(self, config: EngineConfig, threads: int, environ: dict[str, str] | None = None) -> None:
        self.world_size = config.tensor_parallel_size
        self.rendezvous = Rendezvous.for_rank0(self.world_size, os.environ if environ is None else environ)
        self.job = WorkerJob(config, threads, STEP_TIMEOUT_S)
        self.device = resolve_device(config.device)
        self.store = self.rendezvous.open_store(START_TIMEOUT_S)
        self.comm = Communicator(
            0, self.world_size, self.device, STEP_TIMEOUT_S, self.rendezvous.gloo_hostname
        )
        self.plan: TensorParallelPlan | None = None  # set by the owner once rank 0 has its model
        self.generation = -1
        self.processes: dict[int, subprocess.Popen] = {}
        self.broken = True  # until connected
        self.num_blocks: int | None = None
        self.restarts = 0
        self.closed = False
        # Workers never outlive this object, even when nobody calls close() (interpreter exit included).
        self._finalizer = weakref.finalize(self, _stop, self.comm, self.processes, False)
        self._publish()
        self._spawn()

    # --- lifecycle ----------------------------------------------------------------------------

    def _publish(self) -> None:
        """Open the next generation: the job its workers run; workers (re)started from outside join it."""
        self.generation += 1
        self.store.set(generation_prefix(self.generation) + "job", pickle.dumps(self.job))
        self.store.set(GENERATION_KEY, str(self.generation))

    def _spawn(self) -> None:
        """Start this generation's local workers (they load their shard while rank 0 goes on)."""
        if self.rendezvous.external:
            log.info(
                "tensor parallelism: waiting for ranks 1..%d at %s:%d (generation %d)",
                self.world_size - 1,
                self.rendezvous.host,
                self.store.port,
                self.generation,
            )
            return
        env = {
            **os.environ,
            "AGENT_RUNTIME_TP_LOG_LEVEL": logging.getLevelName(logging.getLogger().level),
            "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p),
        }
        for rank in range(1, self.world_size):
            self.processes[rank] = subprocess.Popen(
                [sys.executable, "-m", "engine.distributed.worker"],
                env={**env, **self.rendezvous.worker_environ(rank, self.store.port)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # stdout may be an MCP stdio channel
            )
        log.info(
            "tensor parallelism: started workers %s (generation %d)",
            ", ".join(f"rank {r} pid {p.pid}" for r, p in self.processes.items()),
            self.generation,
        )

    def connect(self, num_blocks: int) -> None:
        """Tell the workers the KV plan, wait until each has loaded its shard, and join them."""
        start = time.perf_counter()
        self.num_blocks = num_blocks
        prefix = generation_prefix(self.generation)
        self.store.set(prefix + "num_blocks", str(num_blocks))
        self._wait_ready(prefix)
        self.comm.connect(dist.PrefixStore(prefix + "group", self.store))
        self.broken = False
        log.info(
            "tensor-parallel group of %d joined in %.2f s (generation %d)",
            self.world_size,
            time.perf_counter() - start,
            self.generation,
        )

    def restart(self) -> None:
        """Stop the workers of the broken generation and connect a fresh one (same KV plan)."""
        if self.closed:
            raise TensorParallelError("the tensor-parallel engine is closed")
        start = time.perf_counter()
        self.broken = True
        self._publish()  # before the old group closes, so that its survivors rejoin the new one
        _stop(self.comm, self.processes, False)
        self._spawn()
        self.connect(self.num_blocks)
        self.restarts += 1
        log.warning(
            "tensor-parallel workers restarted in %.2f s (generation %d)",
            time.perf_counter() - start,
            self.generation,
        )

    def close(self) -> None:
        """Stop the workers for good: a stop message when the group is sound, then by pid."""
        _stop(self.comm, self.processes, not self.broken)
        self.broken = True
        self.closed = True
        self._finalizer.detach()

    # --- steps --------------------------------------------------------------------------------

    def step(
        self, output: SchedulerOutput, options: dict, forward: Callable[..., torch.Tensor]
    ) -> torch.Tensor:
        """Run `output` on every rank (`forward(output, **options)` is rank 0's shard); the whole logits."""
        if self.broken:
            raise TensorParallelError("the tensor-parallel group is down (its workers are being restarted)")
        try:
            self.comm.send_message(("step", output, options))
            return self.comm.gather_logits(forward(output, **options), self.plan.vocab_sizes)
        except Exception as exc:
            # Ranks may now wait in different collectives: only a restart brings them back in step.
            self.broken = True
            died = self.dead_worker(wait_s=1.0)
            if died is not None:
                raise died from exc
            raise

    def dead_worker(self, wait_s: float = 0.0) -> WorkerDiedError | None:
        """The error of the first local worker that has exited (waiting up to `wait_s`); else None."""
        deadline = time.monotonic() + wait_s
        while True:
            for rank, process in self.processes.items():
                if process.poll() is not None:
                    return WorkerDiedError(self._death_message(rank, process))
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def _death_message(self, rank: int, process: subprocess.Popen) -> str:
        code = process.returncode
        how = f"exited with code {code}"
        if code < 0:
            how = f"was killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else how
        message = f"tensor-parallel worker rank {rank} (pid {process.pid}) {how}"
        error = self._worker_error(rank)
        return f"{message}: {error}" if error else message

    def _worker_error(self, rank: int) -> str | None:
        """The last line of the traceback a worker left in the store, if it left one."""
        key = f"{generation_prefix(self.generation)}error/{rank}"
        if not self.store.check([key]):
            return None
        lines = self.store.get(key).decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else None

    def _wait_ready(self, prefix: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = set(range(1, self.world_size))
        while waiting:
            waiting = {r for r in waiting if not self.store.check([f"{prefix}ready/{r}"])}
            for rank in sorted(waiting):
                error = self._worker_error(rank)
                if error:
                    raise TensorParallelError(f"tensor-parallel worker rank {rank} failed to start: {error}")
            died = self.dead_worker()
            if died is not None:
                raise TensorParallelError(f"{died} while starting")
            if waiting and time.monotonic() > deadline:
                how = (
                    "start them with `python -m engine.distributed.worker` and the MASTER_ADDR/MASTER_PORT/"
                    "RANK/WORLD_SIZE variables"
                    if self.rendezvous.external
                    else "see their log above"
                )
                raise TensorParallelError(
                    f"tensor-parallel ranks {sorted(waiting)} did not join within "
                    f"{START_TIMEOUT_S:.0f} s: {how}"
                )
            time.sleep(0.02)


def _stop(comm: Communicator, processes: dict[int, subprocess.Popen], graceful: bool) -> None:
    """Stop the workers this process started: ask (when the group is sound), then terminate, then kill."""
    if graceful and comm.connected:
        try:
            comm.send_message(("stop", None, {}))
        except CollectiveError:
            pass  # a worker is gone already: the signals below finish the job
    deadline = time.monotonic() + (_STOP_GRACE_S if graceful else 0.0)
    for process in processes.values():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    comm.close()  # after the stop message; before the signals, so no collective sees a peer vanish
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    processes.clear()
