"""ModelRunner: owns the model module and the paged KV memory; runs one SchedulerOutput per step."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil
import torch

from agent_kernels.dispatch import triton_enabled
from engine.compiled_decode import CompiledDecode
from engine.config import EngineConfig
from engine.cuda_graphs import CudaGraphDecode
from engine.forward_batch import ForwardBatch
from engine.kv_tensors import KVTensors, resolve_kv_dtype
from engine.loader import LoadedModel
from engine.native_decode import NativeDecode
from engine.sampler import Sampler, SamplerOutput, SamplingState
from engine.scheduler_output import SchedulerOutput

log = logging.getLogger(__name__)

_CPU_KV_DEFAULT_CAP = 1 << 30  # 1 GiB unless --kv-cache-memory says otherwise


def plan_kv_blocks(loaded: LoadedModel, config: EngineConfig, max_model_len: int) -> int:
    """How many KV blocks to allocate, from the config's memory budget and the model's shape."""
    blocks_per_seq = -(-max_model_len // config.block_size)
    wanted = config.max_num_seqs * blocks_per_seq
    spec = getattr(loaded.module, "spec", None)
    if spec is None:  # transformers fallback: keys/values live in its own caches
        return wanted
    kv_dtype = resolve_kv_dtype(config.kv_cache_dtype, loaded.dtype, loaded.device)
    per_block = KVTensors.bytes_per_block(spec.num_layers, config.block_size, spec.num_kv_heads,
                                          spec.head_dim, kv_dtype)
    if config.kv_cache_memory is not None:
        blocks = config.kv_cache_memory // per_block
        if blocks < 1:
            raise ValueError(
                f"kv_cache_memory={config.kv_cache_memory} bytes is smaller than one KV block ({per_block} bytes)"
            )
        return blocks
    devices = getattr(loaded.module, "layer_devices", None) or [loaded.device] * spec.num_layers
    per_layer = per_block // spec.num_layers
    fits = []
    for device in dict.fromkeys(devices):  # each device holds the blocks of its own layers
        device_block = per_layer * devices.count(device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            fits.append(max(1, int(free * config.gpu_memory_utilization) // device_block))
        else:
            budget = min(_CPU_KV_DEFAULT_CAP, psutil.virtual_memory().available // 4)
            fits.append(max(1, min(wanted, budget // device_block)))
    return min(fits)


@dataclass(frozen=True)
class GraphOptions:
    """What CUDA-graph capture needs to size its buffers (engine/cuda_graphs.py)."""

    max_num_seqs: int
    max_model_len: int


class ModelRunner:
    """Builds the flat batch from a SchedulerOutput, runs the model, samples the finishing rows."""

    def __init__(self, loaded: LoadedModel, num_blocks: int, block_size: int, kv_cache_dtype: str = "auto",
                 compiled: CompiledDecode | None = None, graphs: GraphOptions | None = None,
                 native: NativeDecode | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.module
        self.device = loaded.device
        self.block_size = block_size
        self.sampler = Sampler()
        self.compiled = compiled
        self.native = native
        self.kv: KVTensors | None = None
        spec = getattr(self.model, "spec", None)
        if spec is not None:
            kv_dtype = resolve_kv_dtype(kv_cache_dtype, loaded.dtype, self.device)
            self.kv = KVTensors(spec.num_layers, num_blocks, block_size, spec.num_kv_heads, spec.head_dim,
                                kv_dtype, self.device, getattr(self.model, "layer_devices", None))
            gib = num_blocks * KVTensors.bytes_per_block(spec.num_layers, block_size, spec.num_kv_heads,
                                                         spec.head_dim, kv_dtype) / 2**30
            log.info("KV cache: %d blocks of %d tokens (%.2f GiB, %d tokens, %s)", num_blocks, block_size, gib,
                     num_blocks * block_size, str(kv_dtype).removeprefix("torch."))
        # CUDA graphs for decode batches: native models whole on one GPU, on the Triton kernels.
        self.graphs: CudaGraphDecode | None = None
        if (graphs is not None and self.kv is not None and self.device.type == "cuda" and triton_enabled()
                and getattr(self.model, "layer_devices", None) is None):
            self.graphs = CudaGraphDecode(self.model, self.kv, graphs.max_num_seqs, graphs.max_model_len)

    @torch.inference_mode()
    def forward(self, output: SchedulerOutput, every_position: bool = False) -> torch.Tensor:
        """Logits [num_sampling_chunks, vocab] for the chunks with sample=True, in order (with
        every_position, one row per token of the batch instead: teacher-forced scoring)."""
        chunks = output.chunks
        batch = ForwardBatch.build(
            [c.token_ids for c in chunks],
            [c.start_position for c in chunks],
            [c.block_table for c in chunks],
            self.block_size,
            [c.sample for c in chunks],
            [c.request_id for c in chunks],
            self.device,
        )
        if every_position:
            batch.logits_index = torch.arange(len(batch.input_ids), device=self.device)
        elif self.native is not None and self.native.failed is None and batch.is_decode:
            try:
                return self.model(batch, self.kv, layers_step=self.native.step)
            except Exception as exc:  # noqa: BLE001 - a kernel fault must not fail requests: go eager
                # Rerunning is safe: the step rewrites the same KV slots with the same values.
                self.native.disable(exc)
        elif self.compiled is not None and self.compiled.ready.is_set() and batch.is_decode:
            try:
                return self.model(batch, self.kv, layers_step=self.compiled.step)
            except Exception as exc:  # noqa: BLE001 - a compiler fault must not fail requests: go eager
                # Rerunning is safe: the step rewrites the same KV slots with the same values.
                self.compiled.disable(exc)
        elif self.graphs is not None and self.graphs.applies(batch):
            try:
                return self.graphs.run(batch)
            except Exception as exc:  # noqa: BLE001 - a capture fault must not fail requests: go eager
                self.graphs.disable(exc)
        return self.model(batch, self.kv)

    def execute(self, output: SchedulerOutput, states: list[SamplingState]) -> SamplerOutput:
        """Run the step and sample one token for each chunk with sample=True (`states` in that order)."""
        logits = self.forward(output)
        if not states:
            return SamplerOutput([], [])
        return self.sampler(logits, states)

    def release(self, request_id: str) -> None:
        release = getattr(self.model, "release", None)
        if release is not None:
            release(request_id)
