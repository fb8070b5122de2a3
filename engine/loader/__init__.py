"""Load a model by name: resolve its files, build the native module (or the fallback), fill its weights."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from engine.errors import ModelLoadError, UnsupportedArchitectureError
from engine.heap import release_freed_heap
from engine.loader.gguf_checkpoint import GgufCheckpoint
from engine.loader.hf_checkpoint import HfCheckpoint
from engine.loader.quantized import ISQ_MODES, QuantizedAssembly
from engine.loader.source import ModelSource, resolve_model
from engine.models import DecoderModel, native_builder
from engine.tokenizer import Tokenizer
from engine.topology import Topology

log = logging.getLogger(__name__)

_DTYPES = {"f32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "f16": torch.float16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A ready model: its module, tokenizer, and what the engine needs to know about it."""

    source: ModelSource
    module: torch.nn.Module
    tokenizer: Tokenizer
    config: object  # the transformers config
    dtype: torch.dtype
    device: torch.device
    context_length: int
    native: bool
    load_seconds: float


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; `cpu`, `cuda`, `cuda:N` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {name!r}: expected auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: torch.device, quantized: bool = False) -> torch.dtype:
    """`auto` is bf16 on CUDA, and on CPU f32 for dense weights, bf16 for quantized ones (the int4/int8
    CPU kernels are fast only with bf16 activations) when the CPU does bf16 natively."""
    if name == "auto":
        if device.type == "cuda" or (quantized and _cpu_has_bf16()):
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ValueError(f"invalid dtype {name!r}: expected auto, f32, bf16 or f16")
    return _DTYPES[name]


def _cpu_has_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_model(
    model: str | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    allow_fallback: bool = True,
    chat_template: str | None = None,
    isq: str | None = None,
    topology: Topology | None = None,
) -> LoadedModel:
    """Load `model` (path, GGUF file, hub id, or None for the embedded default).

    `isq`: None keeps a GGUF's quantization on the CPU (dequantized on a GPU) and loads safetensors
    dense; "int8"/"int4"/"fp8" quantize the projections at load; "none" loads everything dense (see
    engine/loader/quantized.py). `topology` sets the mode (and device) per layer or tensor
    (engine/topology.py); layers it does not cover follow `isq`.
    """
    if isq is not None and isq not in ISQ_MODES:
        raise ValueError(f"invalid isq {isq!r}: expected one of {', '.join(ISQ_MODES)}")
    start = time.perf_counter()
    target = resolve_device(device)
    source = resolve_model(model)
    checkpoint = GgufCheckpoint(source.path) if source.kind == "gguf" else HfCheckpoint(source.path)
    # isq None keeps a quantized GGUF's codes on the CPU; on a GPU it is dequantized unless asked
    # (--isq int4 keeps Q4 codes as they are; the Triton kernels are not measured against dense bf16 yet).
    keeps_gguf = source.kind == "gguf" and checkpoint.quantized and target.type == "cpu"
    default_mode = ("keep" if keeps_gguf else "none") if isq is None else isq
    quantized = default_mode != "none" or (topology is not None and topology.quantizes)
    torch_dtype = resolve_dtype(dtype, target, quantized)
    config = checkpoint.config
    builder = native_builder(config)
    if builder is None:
        if not allow_fallback:
            from engine.models import NATIVE_ARCHITECTURES

            arch = (getattr(config, "architectures", None) or [config.model_type])[0]
            raise UnsupportedArchitectureError(
                f"architecture {arch!r} has no native implementation"
                + f" and the transformers fallback is disabled; native: {', '.join(sorted(NATIVE_ARCHITECTURES))}"
            )
        from engine.models.hf_fallback import HfFallbackModel

        log.warning("no native implementation for %s: using the transformers fallback (slow path)%s",
                    getattr(config, "architectures", None),
                    f"; isq={isq!r} does not apply to it: weights stay dense" if quantized else "")
        module = HfFallbackModel.load(source, torch_dtype, target)
        native = False
    else:
        module = _build_native(builder(config), checkpoint, source, torch_dtype, target,
                               default_mode if quantized else "none", topology)
        native = True
    tokenizer = Tokenizer(checkpoint.load_tokenizer(), checkpoint.eos_token_ids(), chat_template)
    del checkpoint  # unmaps the file
    release_freed_heap()
    seconds = time.perf_counter() - start
    log.info("loaded %s (%s, %s, %s on %s) in %.2f s", source.name, source.kind,
             "native" if native else "fallback", str(torch_dtype).removeprefix("torch."), target, seconds)
    return LoadedModel(source, module, tokenizer, config, torch_dtype, target,
                       int(config.max_position_embeddings), native, seconds)


def _build_native(spec, checkpoint, source, dtype: torch.dtype, device: torch.device,
                  mode: str, topology: Topology | None) -> DecoderModel:
    with torch.device("meta"):
        module = DecoderModel(spec)
    if topology is not None:
        try:
            topology.check_layers(len(spec.layers))
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
    expected = module.checkpoint_names()
    # Quantized matrices are swapped for placeholders before memory is allocated: never a dense copy.
    if device.type == "cuda" and device.index is None:  # "cuda" and a topology's "cuda:0" are one device
        device = torch.device("cuda", torch.cuda.current_device())
    devices = _layer_devices(topology, len(spec.layers), device)
    quantizes = mode != "none" or (topology is not None and topology.quantizes)
    assembly = QuantizedAssembly(module, None if mode == "keep" else mode, dtype, device, devices, topology) \
        if quantizes else None
    module = module.to(dtype)
    _allocate(module, devices, device)
    if source.kind == "gguf":
        tensors = checkpoint.tensors(expected, assembly.wants if assembly is not None else None)
    else:
        tensors = checkpoint.tensors()
    loaded: set[str] = set()
    unknown: list[str] = []
    # A progress bar on a terminal's stderr (tqdm's disable=None: off when stderr is not a TTY, so logs,
    # tests and the MCP stdio protocol see nothing of it).
    progress = tqdm(tensors, total=len(expected), desc=f"loading {source.name}", unit="tensor", leave=False,
                    disable=None, file=sys.stderr)
    for name, tensor in progress:
        try:
            if assembly is not None and assembly.wants(name):
                assembly.add(name, tensor)
                loaded.add(name)
            elif module.load_weight(name, tensor):
                loaded.add(name)
            else:
                unknown.append(name)
        except ValueError as exc:
            raise ModelLoadError(f"{source.path}: {exc}") from exc
    missing = [name for name in expected if name not in loaded]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ModelLoadError(f"{source.path} is missing tensors: {', '.join(missing[:5])}{more}")
    if unknown:
        log.warning("ignored %d checkpoint tensors we do not use, e.g. %s", len(unknown), unknown[:3])
    if assembly is not None:
        counts = Counter(assembly.kinds.values())
        log.info("quantized matrices: %s", ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
    module.init_buffers()
    if any(d != device for d in devices):
        module.place_layers(devices)  # already there; records the placement for the forward pass
        log.info("layers placed by the topology: %s", _describe_placement(devices))
    return module.eval()


def _allocate(module: DecoderModel, devices: list[torch.device], device: torch.device) -> None:
    """Memory for the meta-device module: each layer on its own device, the rest on `device` (so an
    offloaded layer never passes through the main device's memory)."""
    for layer, layer_device in zip(module.model.layers, devices, strict=True):
        layer.to_empty(device=layer_device)
    for name, child in module.named_children():
        if name == "model":
            for inner_name, inner in child.named_children():
                if inner_name != "layers":
                    inner.to_empty(device=device)
        else:
            child.to_empty(device=device)

def _layer_devices(topology: Topology | None, num_layers: int, default: torch.device) -> list[torch.device]:
    """Each layer's device: the topology's where it sets one (checked to exist), else `default`."""
    if topology is None:
        return [default] * num_layers
    devices = []
    for index, name in enumerate(topology.devices(num_layers)):
        if name is None:
            devices.append(default)
            continue
        try:
            devices.append(resolve_device(name))
        except ValueError as exc:
            raise ModelLoadError(f"{topology.source}: layer {index}: {exc}") from exc
        if devices[-1].type == "cuda" and devices[-1].index >= torch.cuda.device_count():
            raise ModelLoadError(f"{topology.source}: layer {index} asks for {name}, but this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s)")
    return devices


def _describe_placement(devices: list[torch.device]) -> str:
    runs: list[tuple[int, int, torch.device]] = []
    for i, d in enumerate(devices):
        if runs and runs[-1][2] == d:
            runs[-1] = (runs[-1][0], i, d)
        else:
            runs.append((i, i, d))
    return ", ".join(f"layers {a}-{b} on {d}" for a, b, d in runs)
