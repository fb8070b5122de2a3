"""The C++ CPU extension `agent_runtime_cpu`: built on first use, then loaded from torch's cache.

One extension holds the CPU kernels that PyTorch lacks (cpu_decode_attention.cpp: paged decode
attention; cpu_decode_step.cpp: a whole decode step's layers; cpu_quant_matmul.cpp: int4 and
int8 weights times bf16 activations on AVX512-BF16), built together by
torch.utils.cpp_extension with gcc and ninja (~40 s once per machine and source version, then
cached in torch's extensions directory; 0.1 s to load) for this CPU (-march=native).
Not Triton (the package's rule): Triton has no CPU backend in our wheels.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)
_HERE = Path(__file__).parent
SOURCES = (_HERE / "cpu_decode_attention.cpp", _HERE / "cpu_decode_step.cpp", _HERE / "cpu_quant_matmul.cpp")
_lock = threading.Lock()
_state: dict[str, bool] = {}  # "loaded": True / False once load() has run


def load() -> bool:
    """Build (first time) and load the extension; False, logged once, when it cannot be built here."""
    with _lock:
        if "loaded" not in _state:
            try:
                from torch.utils.cpp_extension import load as load_extension

                load_extension(name="agent_runtime_cpu", sources=[str(s) for s in SOURCES], is_python_module=False,
                               extra_cflags=["-O3", "-march=native", "-fopenmp"], verbose=False)
                for name, fake in _FAKES.items():
                    torch.library.register_fake(f"agent_runtime_cpu::{name}")(fake)
                _state["loaded"] = True
            except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, a build error: stay on torch
                log.warning("the C++ CPU kernels could not be built (%s); using the torch paths", exc)
                _state["loaded"] = False
        return _state["loaded"]


def available() -> bool:
    """Whether load() has succeeded (never builds)."""
    return _state.get("loaded", False)


# Shape functions for torch.compile (the ops are extern kernels in a compiled graph).
_FAKES = {
    "decode_attention": lambda q, *args: torch.empty_like(q),
    "decode_layers": lambda x, *args: torch.empty_like(x),
    "int4_mm": lambda x, packed, group, scales_offsets: x.new_empty(x.shape[0], packed.shape[0] * 16),
    "int8_mm": lambda x, packed, group, scale: x.new_empty(x.shape[0], packed.shape[0] * 16),
}
