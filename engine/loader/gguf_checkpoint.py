"""Read a GGUF file: architecture and hyper-parameters, tokenizer and chat template, dequantized tensors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from engine.errors import ModelLoadError, UnsupportedArchitectureError
from engine.loader.conversion_cache import ConversionCache

# GGUF tensor names -> HF names go through gguf's own name map; these are the architectures whose
# tensors we know how to undo (llama.cpp permutes llama q/k rows and stores Gemma norms as 1 + w).
_ARCH = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
_PERMUTED_QK = {"llama", "mistral"}
_GEMMA_NORMS = {"gemma", "gemma2", "gemma3"}


class GgufCheckpoint:
    """One .gguf file, read through the `gguf` package (memory-mapped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.reader = gguf.GGUFReader(path)
        except Exception as exc:  # gguf raises ValueError, struct.error, numpy errors on bad files
            raise ModelLoadError(f"corrupt or truncated GGUF file {path}: {exc}") from exc
        self.architecture = self._field("general.architecture")
        self.cache = ConversionCache(path)
        self.config = self._load_config()
        self.unmapped: list[str] = []  # GGUF tensors with no HF counterpart, filled by tensors()
        size = path.stat().st_size
        for tensor in self.reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size:
                raise ModelLoadError(f"truncated GGUF file {path}: tensor {tensor.name} runs past the end")

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
        eos = self._field("tokenizer.ggml.eos_token_id")
        return [int(eos)] if eos is not None else []

    def _field(self, key: str):
        field = self.reader.get_field(key)
        return None if field is None else field.contents()

    def tensors(self, hf_names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (HF name, float32 tensor), dequantizing each GGUF tensor as it is read."""
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
        for tensor in self.reader.tensors:
            hf_name = to_hf.get(tensor.name)
            if hf_name is None:
                self.unmapped.append(tensor.name)
                continue
            try:
                weights = gguf.dequantize(tensor.data, tensor.tensor_type)
            except (NotImplementedError, ValueError) as exc:
                raise ModelLoadError(
                    f"cannot dequantize {tensor.name} ({tensor.tensor_type.name}) in {self.path}: {exc}"
                ) from exc
            yield hf_name, torch.from_numpy(self._undo_conversion(tensor.name, np.asarray(weights)))

    def _undo_conversion(self, name: str, weights: np.ndarray) -> np.ndarray:
        if self.architecture in _PERMUTED_QK and (".attn_q." in name or ".attn_k." in name):
            heads = self.config.num_attention_heads if ".attn_q." in name else self.config.num_key_value_heads
            half = weights.shape[0] // heads // 2
            weights = weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
        if self.architecture in _GEMMA_NORMS and name.endswith("norm.weight"):
            weights = weights - 1
        weights = np.ascontiguousarray(weights, dtype=np.float32)
        # Unquantized tensors come back as read-only views of the memory map; torch wants to own them.
        return weights if weights.flags.writeable else weights.copy()
