"""Read a GGUF file: architecture and hyper-parameters, tokenizer and chat template, tensors (dequantized,
or kept as their quantized codes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from engine.errors import ModelLoadError, UnsupportedArchitectureError
from engine.loader.conversion_cache import ConversionCache
from engine.loader.gguf_index import GgufIndex
from engine.quant.gguf_blocks import decode_blocks
from engine.quant.group_quant import GroupQuant

# GGUF tensor names -> HF names go through gguf's own name map; these are the architectures whose
# tensors we know how to undo (llama.cpp permutes llama q/k rows and stores Gemma norms as 1 + w).
_ARCH = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
_PERMUTED_QK = {"llama", "mistral"}
_GEMMA_NORMS = {"gemma", "gemma2", "gemma3"}


class GgufCheckpoint:
    """One .gguf file: its header from a cached GgufIndex (or parsed by `gguf`), tensors read one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cache = ConversionCache(path)
        index = GgufIndex.load(path, self.cache.directory / "gguf-index.json")
        if index is None:
            try:
                index = GgufIndex.read(path)
            except Exception as exc:  # gguf raises ValueError, struct.error, numpy errors on bad files
                raise ModelLoadError(f"corrupt or truncated GGUF file {path}: {exc}") from exc
            size = path.stat().st_size
            for tensor in index.tensors:
                if tensor.offset + tensor.n_bytes > size:
                    raise ModelLoadError(f"truncated GGUF file {path}: tensor {tensor.name} runs past the end")
            index.save(self.cache.directory / "gguf-index.json")
        self.index = index
        self.architecture = index.architecture
        self.config = self._load_config()
        self.unmapped: list[str] = []  # GGUF tensors with no HF counterpart, filled by tensors()

    @property
    def quantized(self) -> bool:
        """Whether any tensor is stored in a quantized GGUF type."""
        plain = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
        return any(t.tensor_type not in plain for t in self.index.tensors)

    def _load_config(self):
        if self.cache.has_config():
            return AutoConfig.from_pretrained(self.cache.directory)
        try:
            config = AutoConfig.from_pretrained(self.path.parent, gguf_file=self.path.name)
        except (ValueError, KeyError, OSError) as exc:
            raise UnsupportedArchitectureError(
                f"GGUF architecture {self.architecture!r} in {self.path} is not supported: {exc}"
            ) from exc
        self.cache.store(config, "config")
        return config

    def load_tokenizer(self):
        if self.cache.has_tokenizer():
            return AutoTokenizer.from_pretrained(self.cache.directory)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)
        except (ValueError, KeyError, OSError) as exc:
            raise ModelLoadError(f"cannot build the tokenizer from {self.path}: {exc}") from exc
        self.cache.store(tokenizer, "tokenizer")
        return tokenizer

    def eos_token_ids(self) -> list[int]:
        eos = self.index.eos_token_id
        return [eos] if eos is not None else []

    def tensors(
        self, hf_names: list[str], keep_quantized: Callable[[str], bool] | None = None
    ) -> Iterator[tuple[str, torch.Tensor | GroupQuant]]:
        """Yield (HF name, tensor) in file order. Tensors are float32, dequantized as they are read,
        except those `keep_quantized(hf_name)` accepts whose GGUF type decodes exactly into a
        GroupQuant (Q4_0, Q4_1, Q4_K, Q8_0): those come as the GroupQuant, no float copy made."""
        arch = _ARCH.get(self.architecture)
        if arch is None:
            raise UnsupportedArchitectureError(f"GGUF architecture {self.architecture!r} is unknown to gguf")
        name_map = gguf.get_tensor_name_map(arch, self.config.num_hidden_layers)
        to_hf = {}
        for hf_name in hf_names:
            base, _, suffix = hf_name.rpartition(".")
            gguf_name = name_map.get_name(base)
            if gguf_name is not None:
                to_hf[f"{gguf_name}.{suffix}"] = hf_name
        for tensor in self.index.tensors:
            hf_name = to_hf.get(tensor.name)
            if hf_name is None:
                self.unmapped.append(tensor.name)
                continue
            data = self.index.data(tensor)
            matrix = tensor.rows_cols
            if keep_quantized is not None and matrix is not None and keep_quantized(hf_name):
                quantized = decode_blocks(data, tensor.tensor_type, *matrix)
                if quantized is not None:
                    order = self._row_order(tensor.name, matrix[0])
                    yield hf_name, quantized if order is None else quantized.rows(torch.from_numpy(order))
                    continue
            try:
                weights = gguf.dequantize(data, tensor.tensor_type)
            except (NotImplementedError, ValueError) as exc:
                raise ModelLoadError(
                    f"cannot dequantize {tensor.name} ({tensor.tensor_type.name}) in {self.path}: {exc}"
                ) from exc
            yield hf_name, torch.from_numpy(self._undo_conversion(tensor.name, np.asarray(weights)))
        self.index.close()

    def _row_order(self, name: str, rows: int) -> np.ndarray | None:
        """llama.cpp permutes the rows of llama q/k projections (rotary pairs interleaved); the
        order that undoes it, or None for tensors it left alone."""
        if self.architecture not in _PERMUTED_QK or not (".attn_q." in name or ".attn_k." in name):
            return None
        heads = self.config.num_attention_heads if ".attn_q." in name else self.config.num_key_value_heads
        half = rows // heads // 2
        return np.arange(rows).reshape(heads, half, 2).swapaxes(1, 2).reshape(rows)

    def _undo_conversion(self, name: str, weights: np.ndarray) -> np.ndarray:
        order = self._row_order(name, weights.shape[0])
        if order is not None:
            weights = weights[order]
        if self.architecture in _GEMMA_NORMS and name.endswith("norm.weight"):
            weights = weights - 1
        weights = np.ascontiguousarray(weights, dtype=np.float32)
        # Unquantized tensors come back as read-only views of the memory map; torch wants to own them.
        return weights if weights.flags.writeable else weights.copy()
