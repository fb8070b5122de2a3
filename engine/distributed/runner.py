"""TensorParallelRunner: rank 0's ModelRunner when the model is split: same seam, every rank runs it."""

from __future__ import annotations

import torch

from engine.distributed.group import TensorParallelGroup
from engine.model_runner import ModelRunner
from engine.sampler import SamplerOutput, SamplingState
from engine.scheduler_output import SchedulerOutput


class TensorParallelRunner:
    """Wraps rank 0's own ModelRunner (its shard, its KV heads): `forward` broadcasts the SchedulerOutput,
    runs the local shard and returns the logits gathered from every rank; rank 0 alone samples.
    """

    def __init__(self, local: ModelRunner, group: TensorParallelGroup) -> None:
        self.local = local
        self.group = group

    def forward(self, output: SchedulerOutput, **options) -> torch.Tensor:
        """ModelRunner.forward's logits (rows of the chunks that sample, or `options` asks), whole."""
        return self.group.step(output, options, self.local.forward)

    def execute(self, output: SchedulerOutput, states: list[SamplingState]) -> SamplerOutput:
        logits = self.forward(output)
        if not states:
            return SamplerOutput([], [])
        return self.local.sampler(logits, states)

    def release(self, request_id: str) -> None:
        self.local.release(request_id)

    def __getattr__(self, name: str):
        # Anything else the core reads of its runner (model, kv, sampler, ...) is rank 0's local runner's.
        if name == "local":
            raise AttributeError(name)
        return getattr(self.local, name)
