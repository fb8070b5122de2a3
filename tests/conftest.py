"""Shared fixtures: offline hub, the embedded model loaded once, tiny random checkpoints."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Engines (and the servers tests start) stay eager: a background torch.compile in every test engine
# would cost minutes of CPU. tests/engine/test_compiled_decode.py turns it on where it is the subject.
os.environ.setdefault("AGENT_RUNTIME_COMPILE", "0")

import torch  # noqa: E402

if not torch.cuda.is_available():
    # Without CUDA the Triton kernels are tested in Triton's interpreter (agent_kernels.dispatch.forced);
    # the variable must be set before triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm():
    """The embedded model (SmolLM2-135M-Instruct Q4_1 GGUF) dequantized to fp32 on CPU: the reference
    numerics the parity tests compare with HF transformers (the default, quantized path has its own tests)."""
    from engine import LLM

    return LLM(dtype="f32", isq="none")


@pytest.fixture(scope="session")
def smollm_gguf_path(smollm):
    return smollm.loaded.source.path
