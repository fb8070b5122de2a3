"""Communicator: the collectives of one tensor-parallel group, over process groups it owns.

The groups are built straight from a store (not `init_process_group`'s global default), so one
process can hold several groups: data-parallel replicas that are each tensor-parallel, or a new
group after a restart. Two kinds of traffic:

- control: rank 0's step messages (a pickled SchedulerOutput) broadcast over gloo on the CPU, with
  an unbounded wait on the workers, which sit in it while the engine is idle;
- data: all-reduces of partial products and the gather of logits to rank 0, bounded by the step
  timeout; gloo on CPU (the same group as control), NCCL on CUDA.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F

from engine.errors import CollectiveError

_IDLE = timedelta(days=365)  # a worker waits this long for rank 0's next message


class Communicator:
    """All-reduce, logits gather and message broadcast for one rank; `connect` joins the group."""

    def __init__(
        self,
        rank: int,
        world_size: int,
        device: torch.device,
        step_timeout_s: float,
        hostname: str | None = "127.0.0.1",
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.step_timeout = timedelta(seconds=step_timeout_s)
        # The address gloo binds; None: the interface $GLOO_SOCKET_IFNAME names, else the default one.
        self.hostname = hostname
        self._control = None
        self._data = None

    @property
    def connected(self) -> bool:
        return self._control is not None

    def connect(self, store: dist.Store) -> None:
        """Join the group; blocks until every rank has joined through the same `store`."""
        self._control = self._gloo(dist.PrefixStore("control", store))
        if self.device.type == "cuda":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = self.step_timeout
            self._data = dist.ProcessGroupNCCL(
                dist.PrefixStore("data", store), self.rank, self.world_size, options
            )
        else:
            self._data = self._control

    def _gloo(self, store: dist.Store):
        options = dist.ProcessGroupGloo._Options()
        options._timeout = self.step_timeout
        interface = os.environ.get("GLOO_SOCKET_IFNAME", "").split(",")[0]
        if self.hostname:
            device = dist.ProcessGroupGloo.create_device(hostname=self.hostname)
        elif interface:
            device = dist.ProcessGroupGloo.create_device(interface=interface)
        else:
            device = dist.ProcessGroupGloo.create_default_device()
        options._devices = [device]
        return dist.ProcessGroupGloo(store, self.rank, self.world_size, options)

    def close(self) -> None:
        """Leave the group: the other ranks' pending collectives fail instead of waiting."""
        self._control = None
        self._data = None

    # --- collectives --------------------------------------------------------------------------

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place; returns it."""
        _run(lambda: self._require().allreduce([tensor]).wait())
        return tensor

    def gather_logits(self, local: torch.Tensor, vocab_sizes: list[int]) -> torch.Tensor | None:
        """Every rank's vocabulary slice of the logits, concatenated on rank 0 ([rows, vocab]); else None.

        Slices are padded to the widest one, since a gather moves equal shapes. Every rank knows the
        row count (the chunks that sample), so a step without rows skips the gather on all of them.
        """
        if local.shape[0] == 0:
            return local.new_empty(0, sum(vocab_sizes)) if self.rank == 0 else None
        width = max(vocab_sizes)
        local = F.pad(local, (0, width - local.shape[-1])).contiguous()
        options = dist.GatherOptions()
        options.rootRank = 0
        if self.rank != 0:
            _run(lambda: self._require().gather([], [local], options).wait())
            return None
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        _run(lambda: self._require().gather([parts], [local], options).wait())
        return torch.cat([part[:, :size] for part, size in zip(parts, vocab_sizes, strict=True)], dim=-1)

    def send_message(self, message: object) -> None:
        """Rank 0: broadcast one picklable message (its length first, then its bytes) to the workers."""
        payload = torch.frombuffer(bytearray(pickle.dumps(message)), dtype=torch.uint8)
        self._broadcast(torch.tensor([payload.numel()], dtype=torch.int64), self.step_timeout)
        self._broadcast(payload, self.step_timeout)

    def receive_message(self) -> object:
        """A worker: wait (without a time limit) for rank 0's next message."""
        length = torch.zeros(1, dtype=torch.int64)
        self._broadcast(length, _IDLE)
        payload = torch.empty(int(length.item()), dtype=torch.uint8)
        self._broadcast(payload, self.step_timeout)
        return pickle.loads(payload.numpy().tobytes())

    def _broadcast(self, tensor: torch.Tensor, timeout: timedelta) -> None:
        if self._control is None:
            raise CollectiveError("the tensor-parallel group is not connected")
        options = dist.BroadcastOptions()
        options.rootRank = 0
        options.timeout = timeout
        _run(lambda: self._control.broadcast([tensor], options).wait())

    def _require(self):
        if self._data is None:
            raise CollectiveError("the tensor-parallel group is not connected")
        return self._data


def _run(collective: Callable[[], None]) -> None:
    """Run one collective; a peer that left (or timed out) becomes a CollectiveError naming gloo's reason."""
    try:
        collective()
    except CollectiveError:
        raise
    except RuntimeError as exc:
        raise CollectiveError(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc
