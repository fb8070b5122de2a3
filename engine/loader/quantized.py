"""QuantizedAssembly: which matrices of a native model load quantized, and building them as tensors arrive.

Modes (the `--isq` option, or per layer / per tensor from a `--topology` file): None ("keep") keeps
a GGUF's own quantization (Q4_0/Q4_1/Q4_K become int4 group-wise, exactly; every other type becomes
int8 per-channel) and leaves safetensors dense; "int8" / "int4" / "fp8" quantize the projections at
load (in situ), from whatever the checkpoint holds; "none" loads dense. On the CPU the modules run
PyTorch's weight-only kernels (engine/quant/linear.py; fp8 has none there and runs its reference);
on CUDA, Triton kernels (engine/quant/triton_linear.py). Embeddings are int8 rows on the CPU in every
quantized mode, and stay dense on a GPU (a lookup reads a few rows; the LM head is what streams).
A fused matrix (q/k/v, gate/up) whose parts a topology sets differently takes the most precise mode.

The assembly replaces each quantized module with a placeholder before the model's memory is
allocated, so no dense copy of a quantized matrix is ever made: parts (q/k/v, gate/up) are held
until the last one arrives, then become one quantized module and are dropped.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from engine.heap import release_freed_heap
from engine.quant.embedding import Int8Embedding
from engine.quant.group_quant import GroupQuant
from engine.quant.isq import quantize_fp8, quantize_int4, quantize_int8
from engine.quant.linear import build_linear, int4_supported
from engine.quant.triton_linear import build_gpu_linear, int4_fits
from engine.topology import Topology, layer_index, most_precise

log = logging.getLogger(__name__)

ISQ_MODES = ("none", "int8", "int4", "fp8")
KEEP = "keep"  # isq None: a GGUF's own quantization


class _Pending(nn.Module):
    """Stands in for a quantized module until its weights have arrived; holds only the dense bias."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.bias = getattr(original, "bias", None)


class QuantizedAssembly:
    """Collects checkpoint tensors of the quantized matrices and swaps finished modules into the model."""

    def __init__(self, model: nn.Module, mode: str | None, dtype: torch.dtype,
                 device: torch.device | None = None, layer_devices: list[torch.device] | None = None,
                 topology: Topology | None = None) -> None:
        self.model = model
        self.dtype = dtype
        self.device = device or torch.device("cpu")  # the model's: embedding and LM head
        self.layer_devices = layer_devices  # layer i's matrices live on layer_devices[i] (None: `device`)
        default = KEEP if mode is None else mode
        self._owner: dict[str, str] = {}  # checkpoint name -> module path
        self._parts: dict[str, list[str]] = {}  # module path -> its checkpoint names in row order
        self._arrived: dict[str, dict[str, GroupQuant | torch.Tensor]] = {}
        self.modes: dict[str, str] = {}  # module path -> the mode asked for it
        self.kinds: dict[str, str] = {}  # module path -> "int4" / "int8" / "fp8", what it became
        for path, names in model.quantizable():
            asked = [topology.isq_for(n, default) if topology is not None else default for n in names]
            mode_here = most_precise(asked) if len(set(asked)) > 1 else asked[0]
            if len(set(asked)) > 1:
                log.info("%s: parts ask for %s; the fused matrix uses %s", path, "/".join(asked), mode_here)
            if mode_here == "none" or (path.endswith("embed_tokens") and self._device(path).type != "cpu"):
                continue
            self.modes[path] = mode_here
            self._parts[path] = names
            self._owner.update(dict.fromkeys(names, path))
            self._arrived[path] = {}
            parent, _, leaf = path.rpartition(".")
            original = model.get_submodule(path)
            setattr(model.get_submodule(parent) if parent else model, leaf, _Pending(original))

    def wants(self, name: str) -> bool:
        return name in self._owner

    def add(self, name: str, tensor: GroupQuant | torch.Tensor) -> None:
        """Take one checkpoint tensor; builds its module once every part of it is here."""
        path = self._owner[name]
        arrived = self._arrived[path]
        arrived[name] = tensor
        if len(arrived) == len(self._parts[path]):
            self._build(path, [arrived[n] for n in self._parts[path]])
            del self._arrived[path]

    def missing(self) -> list[str]:
        return [n for path, got in self._arrived.items() for n in self._parts[path] if n not in got]

    def _build(self, path: str, parts: list[GroupQuant | torch.Tensor]) -> None:
        parent, _, leaf = path.rpartition(".")
        owner = self.model.get_submodule(parent) if parent else self.model
        pending = getattr(owner, leaf)
        shapes = [p.shape for p in parts]
        mode = self.modes[path]
        device = self._device(path)
        if leaf == "embed_tokens":
            module, kind = Int8Embedding(self._int8(parts), self.dtype, cpu=device.type == "cpu"), "int8"
        else:
            module, kind = self._linear(parts, mode, pending.bias, device)
        expected = (sum(s[0] for s in shapes), shapes[0][1])
        if module_shape(module) != expected:
            raise ValueError(f"{path}: quantized shape {module_shape(module)} does not match its parts {shapes}")
        setattr(owner, leaf, module.to(device))
        self.kinds[path] = kind
        release_freed_heap()  # the parts' codes are garbage now; keep them from piling up as resident holes

    def _device(self, path: str) -> torch.device:
        """Where a matrix lives: its layer's device (a topology may place layers), else the model's."""
        index = layer_index(path + ".")
        return self.layer_devices[index] if self.layer_devices and index is not None else self.device

    def _linear(self, parts: list[GroupQuant | torch.Tensor], mode: str, bias: torch.Tensor | None,
                device: torch.device) -> tuple[nn.Module, str]:
        """The module for `mode` on `device`, and the kind it became."""
        cpu = device.type == "cpu"
        if mode == "fp8":
            gq = quantize_fp8(torch.cat([_dense(p) for p in parts]))
            return build_gpu_linear(gq, bias, self.dtype, "fp8"), "fp8"
        int4 = self._int4(parts, requantize=mode == "int4", cpu=cpu) if mode in (KEEP, "int4") else None
        kind = "int8" if int4 is None else "int4"
        weight = int4 or self._int8(parts)
        if cpu:
            return build_linear(weight, bias, self.dtype, prefer_int4=int4 is not None), kind
        return build_gpu_linear(weight, bias, self.dtype, kind), kind

    @staticmethod
    def _int4_fits(gq: GroupQuant, cpu: bool) -> bool:
        return int4_supported(gq) if cpu else int4_fits(gq)

    def _int4(self, parts: list[GroupQuant | torch.Tensor], requantize: bool, cpu: bool) -> GroupQuant | None:
        """The parts as one int4-kernel weight, or None when they are not (and may not become) one."""
        if all(isinstance(p, GroupQuant) for p in parts):
            try:
                whole = GroupQuant.cat(parts)
            except ValueError:  # parts of different formats (a Q8_0 v_proj beside Q4 q/k): not one int4 weight
                whole = None
            if whole is not None and self._int4_fits(whole, cpu):
                return whole
        if not requantize:
            return None
        dense = torch.cat([_dense(p) for p in parts])
        rows, cols = dense.shape
        if cols % 32 or (cpu and rows % 16):
            return None
        return quantize_int4(dense)

    @staticmethod
    def _int8(parts: list[GroupQuant | torch.Tensor]) -> GroupQuant:
        """The parts as one 8-bit weight: a Q8_0 tensor as it is (its modules choose their scales), others
        requantized with one scale per row."""
        if len(parts) == 1:
            part = parts[0]
            if isinstance(part, GroupQuant) and part.symmetric_int8:
                return part
            return quantize_int8(part)
        return quantize_int8(torch.cat([_dense(p) for p in parts]))


def _dense(part: GroupQuant | torch.Tensor) -> torch.Tensor:
    return part.dequantize() if isinstance(part, GroupQuant) else part.float()


def module_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, Int8Embedding):
        return (module.num_embeddings, module.embedding_dim)
    return (module.out_features, module.in_features)
