"""Rendezvous: where the ranks of a tensor-parallel group meet, and what rank 0 tells the workers there.

Rank 0 hosts a TCP store. Workers find it through the variables torchrun sets (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), whoever started them: rank 0 itself (local workers,
on a free port of 127.0.0.1) or an outside launcher (other nodes; then rank 0 starts none and is
itself given those variables with RANK=0).

Each (re)start of the workers is one generation; its keys live under `tp/<generation>/`:
`job` (a pickled WorkerJob), `num_blocks`, `ready/<rank>`, `error/<rank>`. `tp/generation`
names the current one, which is what a worker restarted from outside joins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from engine.config import EngineConfig
from engine.errors import TensorParallelError

_TORCHRUN = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")
GENERATION_KEY = "tp/generation"


@dataclass(frozen=True)
class WorkerJob:
    """What every worker of one generation runs: the engine config, its thread count, the step timeout."""

    config: EngineConfig
    threads: int
    step_timeout_s: float


def generation_prefix(generation: int) -> str:
    return f"tp/{generation}/"


@dataclass(frozen=True)
class Rendezvous:
    """The store's address, this process's rank, and whether rank 0 starts the workers itself."""

    host: str
    port: int  # 0: rank 0 picks a free one
    rank: int
    world_size: int
    local_rank: int
    external: bool  # the workers are started by someone else (torchrun-style variables were given)

    @classmethod
    def for_rank0(cls, world_size: int, environ: Mapping[str, str] = os.environ) -> Rendezvous:
        """Local workers on 127.0.0.1, unless torchrun-style variables for a group of this size are set."""
        if not all(name in environ for name in _TORCHRUN):
            return cls("127.0.0.1", 0, 0, world_size, 0, external=False)
        rank, size = _int(environ, "RANK"), _int(environ, "WORLD_SIZE")
        if size != world_size:
            raise TensorParallelError(
                f"WORLD_SIZE={size} in the environment, but tensor_parallel_size={world_size}: "
                "they must match "
                "(or unset MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE to start local workers)"
            )
        if rank != 0:
            raise TensorParallelError(
                f"this process is RANK={rank}: the serving process is rank 0; start the other ranks with "
                "`python -m engine.distributed.worker`"
            )
        return cls(
            environ["MASTER_ADDR"],
            _int(environ, "MASTER_PORT"),
            0,
            size,
            _int(environ, "LOCAL_RANK", 0),
            external=True,
        )

    @classmethod
    def for_worker(cls, environ: Mapping[str, str] = os.environ) -> Rendezvous:
        """A worker's rendezvous, from the torchrun-style variables (all required)."""
        missing = [name for name in _TORCHRUN if name not in environ]
        if missing:
            raise TensorParallelError(
                f"a tensor-parallel worker needs {', '.join(missing)} in its environment"
            )
        rank = _int(environ, "RANK")
        if rank < 1:
            raise TensorParallelError(
                f"a worker's RANK must be >= 1 (rank 0 is the serving process), got {rank}"
            )
        return cls(
            environ["MASTER_ADDR"],
            _int(environ, "MASTER_PORT"),
            rank,
            _int(environ, "WORLD_SIZE"),
            _int(environ, "LOCAL_RANK", 0),
            external="AGENT_RUNTIME_TP_PARENT" not in environ,
        )

    @property
    def gloo_hostname(self) -> str | None:
        """The address gloo binds: loopback for a local group, this host's default interface otherwise."""
        return "127.0.0.1" if self.host in ("127.0.0.1", "localhost") else None

    def open_store(self, timeout_s: float) -> dist.TCPStore:
        """Rank 0 hosts the store; a worker connects to it (retrying until `timeout_s`)."""
        return dist.TCPStore(
            self.host,
            self.port,
            is_master=self.rank == 0,
            wait_for_workers=False,
            timeout=timedelta(seconds=timeout_s),
        )

    def worker_environ(self, rank: int, port: int) -> dict[str, str]:
        """The torchrun-style variables of local worker `rank`, for a store on `port`."""
        return {
            "MASTER_ADDR": self.host,
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(self.world_size),
            "AGENT_RUNTIME_TP_PARENT": str(os.getpid()),
        }


def _int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TensorParallelError(
            f"invalid {name}={value!r} in the environment: expected an integer"
        ) from None
