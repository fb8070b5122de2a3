"""EngineConfig: every option of one engine, validated once at the edge (CLI, Python API)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30}


@dataclass(frozen=True)
class EngineConfig:
    """How to load the model and how to run requests on it.

    `compile` runs decode steps through torch.compile once compiled in the background (CPU, native
    models; engine/compiled_decode.py); the default is on unless AGENT_RUNTIME_COMPILE=0.
    `native_decode` runs the decode step's layers as one C++ call where the model fits (CPU, Llama-style,
    quantized linears, bf16 activations; engine/native_decode.py), in place of torch.compile; the
    default is on unless AGENT_RUNTIME_NATIVE_DECODE=0.
    `isq` None keeps a GGUF's own quantization (int4/int8 kernels) and loads safetensors dense; "int8" /
    "int4" quantize the projections at load; "none" loads every weight dense in `dtype`.
    `max_num_batched_tokens` None means 2048 on CPU and 8192 on GPU. `kv_cache_memory` (bytes)
    None means: on GPU, `gpu_memory_utilization` of the free memory after loading; on CPU, enough
    for `max_num_seqs` full-length sequences, capped at 25% of the machine's available memory.
    `topology` is a YAML file (mistral.rs format) setting isq / device per layer (engine/topology.py).
    `cuda_graphs` replays captured CUDA graphs for decode batches on GPU (engine/cuda_graphs.py).
    `tensor_parallel_size` > 1 splits the model over that many processes (engine/distributed/);
    `data_parallel_size` > 1 serves that many replicas behind one router (engine/data_parallel.py).
    """

    model: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    allow_fallback: bool = True
    chat_template: str | None = None
    max_num_seqs: int = 32
    max_num_batched_tokens: int | None = None
    block_size: int = 16
    enable_prefix_caching: bool = True
    kv_cache_memory: int | None = None
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    num_threads: int | None = None
    warmup: bool = True
    isq: str | None = None
    topology: str | None = None
    kv_cache_dtype: str = "auto"
    compile: bool = field(default_factory=lambda: os.environ.get("AGENT_RUNTIME_COMPILE", "1") != "0")
    native_decode: bool = field(default_factory=lambda: os.environ.get("AGENT_RUNTIME_NATIVE_DECODE", "1") != "0")
    cuda_graphs: bool = True
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1

    def __post_init__(self) -> None:
        def positive(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"invalid {name}={value!r}: must be an integer >= 1")

        positive("max_num_seqs")
        positive("max_num_batched_tokens", allow_none=True)
        positive("block_size")
        positive("kv_cache_memory", allow_none=True)
        positive("max_model_len", allow_none=True)
        positive("num_threads", allow_none=True)
        positive("tensor_parallel_size")
        positive("data_parallel_size")
        if self.isq is not None and self.isq not in ("none", "int8", "int4", "fp8"):
            raise ValueError(f"invalid isq={self.isq!r}: expected none, int8, int4 or fp8")
        if self.kv_cache_dtype not in ("auto", "f32", "bf16", "f16", "fp8"):
            raise ValueError(f"invalid kv_cache_dtype={self.kv_cache_dtype!r}: expected auto, f32, bf16, f16 or fp8")
        if self.topology is not None:
            self.load_topology()  # a bad file fails here, at the edge, naming the file and the entry
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"invalid gpu_memory_utilization={self.gpu_memory_utilization!r}: must be in (0, 1]")


    def load_topology(self):
        """The parsed `topology` file (engine.topology.Topology), or None."""
        from engine.topology import Topology

        return None if self.topology is None else Topology.load(self.topology)


def parse_memory(text: str) -> int:
    """'2GiB', '512MB', '1.5g', '1073741824' -> bytes; ValueError naming the text otherwise."""
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = cleaned[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise ValueError(f"invalid memory size {text!r}: expected a number with an optional unit, e.g. 2GiB or 512MB")
    return int(value * _UNITS[unit])
