"""Read a Hugging Face model directory: config, tokenizer, and memory-mapped safetensors shards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from engine.errors import ModelLoadError


class HfCheckpoint:
    """A HF-layout directory: config.json, tokenizer files and *.safetensors (sharded or not)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.config = AutoConfig.from_pretrained(path)
        except (ValueError, OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read {path / 'config.json'}: {exc}") from exc
        self.files = self._weight_files()

    def load_tokenizer(self):
        try:
            return AutoTokenizer.from_pretrained(self.path)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"cannot load the tokenizer in {self.path}: {exc}") from exc

    def eos_token_ids(self) -> list[int]:
        """EOS ids from generation_config.json, falling back to config.json."""
        try:
            eos = GenerationConfig.from_pretrained(self.path).eos_token_id
        except OSError:
            eos = getattr(self.config, "eos_token_id", None)
        if eos is None:
            return []
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]

    def _weight_files(self) -> list[Path]:
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise ModelLoadError(f"corrupt shard index {index}: {exc}") from exc
            files = [self.path / name for name in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise ModelLoadError(f"shards listed in {index} are missing: {', '.join(missing)}")
            return files
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"no *.safetensors weights in {self.path}")
        return files

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) one at a time from memory-mapped files: no full copy in RAM."""
        for file in self.files:
            try:
                handle = safe_open(str(file), framework="pt")
            except (SafetensorError, OSError) as exc:
                raise ModelLoadError(f"corrupt or truncated safetensors file {file}: {exc}") from exc
            with handle as f:
                for name in f.keys():
                    try:
                        yield name, f.get_tensor(name)
                    except SafetensorError as exc:
                        raise ModelLoadError(f"cannot read tensor {name} from {file}: {exc}") from exc
