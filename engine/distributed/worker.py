"""A tensor-parallel worker (ranks 1..N-1): load, keep this rank's shard, then run every step rank 0 sends.

    python -m engine.distributed.worker     # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE[, LOCAL_RANK] set

Rank 0 starts local workers itself; on other nodes a launcher sets the same variables torchrun
does. The worker reads its job (the engine config) from rank 0's store, so it takes no flags.
Each step it receives the SchedulerOutput, runs its shard over its own KV cache (its KV heads
only), and sends its slice of the logits to rank 0; it never samples. It exits when rank 0 says
stop, when the group breaks (rank 0 then restarts it, or its launcher does), or when the process
that started it is gone.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
import traceback

import torch
import torch.distributed as dist

from engine.distributed.communicator import Communicator
from engine.distributed.rendezvous import GENERATION_KEY, Rendezvous, WorkerJob, generation_prefix
from engine.distributed.sharding import load_dense, plan_for, shard_model
from engine.errors import CollectiveError
from engine.loader import resolve_device
from engine.model_runner import ModelRunner

log = logging.getLogger("engine.distributed.worker")

_STORE_TIMEOUT_S = 900.0  # how long a worker waits for rank 0 (its store, then its KV plan)


def main() -> int:
    rendezvous = Rendezvous.for_worker()
    logging.basicConfig(
        level=os.environ.get("AGENT_RUNTIME_TP_LOG_LEVEL", "WARNING"),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s tp-rank-{rendezvous.rank} %(name)s: %(message)s",
    )
    if "AGENT_RUNTIME_TP_PARENT" in os.environ:
        _exit_with_parent(int(os.environ["AGENT_RUNTIME_TP_PARENT"]))
    store = rendezvous.open_store(_STORE_TIMEOUT_S)
    prefix = generation_prefix(int(store.get(GENERATION_KEY)))
    try:
        comm, runner, vocab_sizes = _start(rendezvous, store, prefix)
    except Exception:  # noqa: BLE001 - reported to rank 0, which names it in its error
        store.set(f"{prefix}error/{rendezvous.rank}", traceback.format_exc())
        log.exception("tensor-parallel worker failed to start")
        return 1
    return _serve(comm, runner, vocab_sizes, rendezvous.rank, store, prefix)


def _start(rendezvous: Rendezvous, store: dist.Store, prefix: str):
    job: WorkerJob = pickle.loads(store.get(prefix + "job"))
    torch.set_num_threads(job.threads)
    device = resolve_device(job.config.device)
    if device.type == "cuda":
        device = torch.device("cuda", rendezvous.local_rank)
        torch.cuda.set_device(device)
    loaded = load_dense(job.config, str(device))
    plan = plan_for(loaded.module, rendezvous.world_size)
    comm = Communicator(
        rendezvous.rank, rendezvous.world_size, loaded.device, job.step_timeout_s, rendezvous.gloo_hostname
    )
    shard_model(loaded.module, plan, rendezvous.rank, comm)
    num_blocks = int(store.get(prefix + "num_blocks"))  # published by rank 0 once it has planned its KV cache
    runner = ModelRunner(loaded, num_blocks, job.config.block_size, job.config.kv_cache_dtype)
    store.set(f"{prefix}ready/{rendezvous.rank}", "1")
    comm.connect(dist.PrefixStore(prefix + "group", store))
    log.info(
        "tensor-parallel rank %d of %d ready (%s)", rendezvous.rank, rendezvous.world_size, plan.describe()
    )
    return comm, runner, plan.vocab_sizes


def _serve(
    comm: Communicator, runner: ModelRunner, vocab_sizes: list[int], rank: int, store: dist.Store, prefix: str
) -> int:
    while True:
        try:
            kind, output, options = comm.receive_message()
            if kind == "stop":
                comm.close()
                return 0
            comm.gather_logits(runner.forward(output, **options), vocab_sizes)
        except CollectiveError as exc:  # rank 0 left the group: shut down, restarting us, or gone
            log.info("rank 0 left the tensor-parallel group: exiting")
            log.debug("the collective that failed: %s", exc)
            comm.close()
            return 1
        except Exception:  # noqa: BLE001 - the step failed here: rank 0 sees this rank leave, and why
            store.set(f"{prefix}error/{rank}", traceback.format_exc())
            log.exception("tensor-parallel step failed on rank %d", rank)
            comm.close()
            return 1


def _exit_with_parent(parent: int) -> None:
    """Exit when the process that started this worker is gone (no orphaned workers, whatever killed it)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # gloo's threads may still hold sockets of a broken group; skip interpreter teardown (it can abort).
    os._exit(code)
