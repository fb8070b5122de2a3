"""GgufIndex: the few header facts we use from a GGUF file, cached so a reload need not parse it again.

`gguf.GGUFReader` parses every metadata field item by item; for a 49k-token vocabulary that is
~3.4 s of a 4 s load. The index (architecture, EOS id, and each tensor's name, type, shape and
data offset) is saved as JSON beside the converted config and tokenizer (ConversionCache); a
reload reads tensors at their offsets from the index, without the reader.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import gguf
import numpy as np

from engine.errors import ModelLoadError

log = logging.getLogger(__name__)
_VERSION = 1


@dataclass(frozen=True)
class TensorEntry:
    name: str
    type: int  # gguf.GGMLQuantizationType value
    shape: tuple[int, ...]  # GGUF order (innermost first), as gguf reports it
    offset: int  # absolute byte offset in the file
    n_bytes: int

    @property
    def tensor_type(self) -> gguf.GGMLQuantizationType:
        return gguf.GGMLQuantizationType(self.type)

    @property
    def rows_cols(self) -> tuple[int, int] | None:
        """(rows, columns) of a matrix in PyTorch order; None for other ranks."""
        return (self.shape[1], self.shape[0]) if len(self.shape) == 2 else None


@dataclass(frozen=True)
class GgufIndex:
    path: Path
    architecture: str
    eos_token_id: int | None
    tensors: tuple[TensorEntry, ...]

    @classmethod
    def read(cls, path: Path) -> GgufIndex:
        """Parse the file with the `gguf` package (slow for big vocabularies; see the module doc)."""
        reader = gguf.GGUFReader(path)

        def field(key: str):
            f = reader.get_field(key)
            return None if f is None else f.contents()

        eos = field("tokenizer.ggml.eos_token_id")
        entries = tuple(
            TensorEntry(t.name, int(t.tensor_type), tuple(int(n) for n in t.shape), int(t.data_offset), int(t.n_bytes))
            for t in reader.tensors
        )
        return cls(path, str(field("general.architecture")), None if eos is None else int(eos), entries)

    def save(self, file: Path) -> None:
        data = {"version": _VERSION, "architecture": self.architecture, "eos_token_id": self.eos_token_id,
                "tensors": [asdict(t) for t in self.tensors]}
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(data))
        except OSError as exc:
            log.debug("could not cache the GGUF index in %s: %s", file, exc)

    @classmethod
    def load(cls, path: Path, file: Path) -> GgufIndex | None:
        """The cached index, or None when absent, unreadable or of another version."""
        try:
            data = json.loads(file.read_text())
            if data.get("version") != _VERSION:
                return None
            entries = tuple(TensorEntry(t["name"], t["type"], tuple(t["shape"]), t["offset"], t["n_bytes"])
                            for t in data["tensors"])
            return cls(path, data["architecture"], data["eos_token_id"], entries)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # AttributeError: JSON not an object
            return None

    @cached_property
    def _file(self):
        return open(self.path, "rb")  # noqa: SIM115 - closed by close()

    def close(self) -> None:
        if "_file" in self.__dict__:
            self.__dict__.pop("_file").close()

    def data(self, entry: TensorEntry) -> np.ndarray:
        """The tensor's stored bytes as gguf.dequantize takes them: quantized types as uint8 rows of
        blocks, plain float types as an array of their dtype in PyTorch's shape.

        Read into a buffer of its own (not memory-mapped): the file's pages then stay in the page
        cache instead of counting, all at once, in this process's resident memory while it loads.
        """
        buffer = bytearray(entry.n_bytes)
        self._file.seek(entry.offset)
        if self._file.readinto(buffer) != entry.n_bytes:
            raise ModelLoadError(f"truncated GGUF file {self.path}: tensor {entry.name} runs past the end")
        raw = np.frombuffer(buffer, dtype=np.uint8)
        shape = tuple(reversed(entry.shape))
        plain = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}
        dtype = plain.get(entry.tensor_type)
        if dtype is not None:
            return raw.view(dtype).reshape(shape)
        return raw.reshape(shape[:-1] + (-1,))
