"""QuantizedAssembly: which matrices of a native model load quantized, and building them as tensors arrive.

Modes (the `--isq` option): None keeps a GGUF's own quantization (Q4_0/Q4_1/Q4_K become int4
group-wise, exactly; every other type becomes int8 per-channel) and leaves safetensors dense;
"int8" / "int4" quantize every projection at load (in situ), from whatever the checkpoint holds;
"none" loads everything dense. Embeddings are kept as int8 rows in every quantized mode.

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
from engine.quant.isq import quantize_int4, quantize_int8
from engine.quant.linear import build_linear, int4_supported

log = logging.getLogger(__name__)

ISQ_MODES = ("none", "int8", "int4")


class _Pending(nn.Module):
    """Stands in for a quantized module until its weights have arrived; holds only the dense bias."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.bias = getattr(original, "bias", None)


class QuantizedAssembly:
    """Collects checkpoint tensors of the quantized matrices and swaps finished modules into the model."""

    def __init__(self, model: nn.Module, mode: str | None, dtype: torch.dtype) -> None:
        self.model = model
        self.int4 = mode in (None, "int4")
        self.requantize_int4 = mode == "int4"
        self.dtype = dtype
        self._owner: dict[str, str] = {}  # checkpoint name -> module path
        self._parts: dict[str, list[str]] = {}  # module path -> its checkpoint names in row order
        self._arrived: dict[str, dict[str, GroupQuant | torch.Tensor]] = {}
        self.kinds: dict[str, str] = {}  # module path -> "int4" / "int8", for logs and tests
        for path, names in model.quantizable():
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
        if leaf == "embed_tokens":
            module = Int8Embedding(self._int8(parts), self.dtype)
            kind = "int8"
        else:
            gq = self._int4(parts)
            module = build_linear(gq or self._int8(parts), pending.bias, self.dtype, prefer_int4=gq is not None)
            kind = "int4" if gq is not None else "int8"
        expected = (sum(s[0] for s in shapes), shapes[0][1])
        if module_shape(module) != expected:
            raise ValueError(f"{path}: quantized shape {module_shape(module)} does not match its parts {shapes}")
        setattr(owner, leaf, module)
        self.kinds[path] = kind
        release_freed_heap()  # the parts' codes are garbage now; keep them from piling up as resident holes

    def _int4(self, parts: list[GroupQuant | torch.Tensor]) -> GroupQuant | None:
        """The parts as one int4-kernel weight, or None when they are not (and may not become) one."""
        if not self.int4:
            return None
        if all(isinstance(p, GroupQuant) for p in parts):
            try:
                whole = GroupQuant.cat(parts)
            except ValueError:  # parts of different formats (a Q8_0 v_proj beside Q4 q/k): not one int4 weight
                whole = None
            if whole is not None and int4_supported(whole):
                return whole
        if not self.requantize_int4:
            return None
        dense = torch.cat([_dense(p) for p in parts])
        rows, cols = dense.shape
        return quantize_int4(dense) if rows % 16 == 0 and cols % 32 == 0 else None

    @staticmethod
    def _int8(parts: list[GroupQuant | torch.Tensor]) -> GroupQuant:
        if len(parts) == 1:
            return quantize_int8(parts[0])
        return quantize_int8(torch.cat([_dense(p) for p in parts]))


def _dense(part: GroupQuant | torch.Tensor) -> torch.Tensor:
    return part.dequantize() if isinstance(part, GroupQuant) else part.float()


def module_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, Int8Embedding):
        return (module.num_embeddings, module.embedding_dim)
    return (module.out_features, module.in_features)
