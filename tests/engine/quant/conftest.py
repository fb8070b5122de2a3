"""The embedded GGUF's tensors, read once with the `gguf` package (the reference the quantized path is checked against)."""

from __future__ import annotations

import gguf
import pytest


@pytest.fixture(scope="session")
def gguf_reader(smollm_gguf_path) -> gguf.GGUFReader:
    return gguf.GGUFReader(smollm_gguf_path)


@pytest.fixture(scope="session")
def gguf_tensors(gguf_reader) -> dict[str, gguf.ReaderTensor]:
    """Tensor name -> ReaderTensor; `.data` is uint8 [rows, row_bytes] for quantized types, and the
    PyTorch shape is the reverse of `.shape` (GGUF lists the innermost dimension first)."""
    return {t.name: t for t in gguf_reader.tensors}


@pytest.fixture(scope="session", autouse=True)
def eager_decode():
    """Engines here decode eagerly: the background torch.compile warm-up (engine/compiled_decode.py)
    would take one of the cores these tests measure on, and switch paths mid-test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENT_RUNTIME_COMPILE", "0")
        yield
