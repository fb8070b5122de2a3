"""When a kernel's Triton version runs instead of its plain-torch reference.

Triton kernels run on CUDA tensors when triton imports and `AGENT_RUNTIME_TRITON` is not `0`.
Tests run them on CPU tensors under the Triton interpreter (`TRITON_INTERPRET=1`, set before
triton is imported) by entering `forced()`: then every dispatch in `agent_kernels/` picks Triton,
whatever the device, so a whole model forward can be checked against its reference path.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator

import torch

_forced = False


@functools.cache
def triton_available() -> bool:
    """Whether triton is installed (it is imported only by the kernels that use it)."""
    return importlib.util.find_spec("triton") is not None


def triton_enabled() -> bool:
    """Triton kernels are on unless AGENT_RUNTIME_TRITON=0 (the switch to run the torch references)."""
    return os.environ.get("AGENT_RUNTIME_TRITON", "1") != "0" and triton_available()


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def use_triton(t: torch.Tensor) -> bool:
    """Whether a kernel given tensor `t` should run its Triton version."""
    if _forced:
        return True
    return t.is_cuda and triton_enabled()


@contextlib.contextmanager
def forced() -> Iterator[None]:
    """Run every kernel's Triton version (tests: on CPU tensors under TRITON_INTERPRET=1)."""
    global _forced
    if not triton_available():
        raise RuntimeError("triton is not installed: the Triton kernels cannot run")
    if not interpreting() and not torch.cuda.is_available():
        raise RuntimeError("forcing Triton kernels without CUDA needs TRITON_INTERPRET=1 set before triton loads")
    previous, _forced = _forced, True
    try:
        yield
    finally:
        _forced = previous
