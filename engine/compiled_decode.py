"""CompiledDecode: the decoder layers of a decode step under torch.compile (inductor's C++ backend).

The whole stack of layers is one graph (the Python loop unrolled: no per-layer call overhead),
with dynamic shapes, so one graph serves every batch size and context length: the few variants
dynamo specialises (batch 1 or more, one block or more) are compiled at start on a background
thread while the engine serves eagerly, then the runner switches over. Inside the graph, norms,
rotary, residuals and the gated MLP fuse around the int4/int8 matmuls; decode attention is the
C++ paged kernel of agent_kernels/cpu_decode_attention.py (built here, before compiling, the first time),
or where it does not apply the eager code as one opaque op (engine::decode_attention; an
inductor-fused paged form measured slower, see engine/attention.py).
Inductor rounds intermediates as eager does (`emulate_precision_casts`); its fused reductions
(RMSNorm's mean) may still round differently, so compiled and eager logits agree to bf16
rounding (fp32: greedy tokens identical; tested). The eager path stays the
reference; `compile=False` (`--no-compile`) keeps it alone. CPU only: on CUDA, decode steps replay CUDA
graphs instead (engine/cuda_graphs.py). Where the native C++ step fits (engine/native_decode.py:
Llama-style quantized models) it runs instead and nothing is compiled; this serves the others.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import itertools
import logging
import sys
import threading
import time
import types
import weakref

import torch

from agent_kernels import cpu_decode_attention
from engine.forward_batch import DecodeBatch
from engine.heap import release_freed_heap
from engine.models.decoder import run_layers
from engine.omp_pool import release_omp_pool

log = logging.getLogger(__name__)

# (batch size, blocks per sequence) compiled before switching over: sizes 1 specialise in dynamo,
# so 1 and "more than 1" of each are the variants; distinct values avoid accidental equalities.
_WARM_SHAPES = ((1, 1), (1, 3), (3, 1), (5, 3))
_OPTIONS = {
    "emulate_precision_casts": True,
    # Per-step Python the compiled step would otherwise run on its ~100 inputs (measured at 512 tokens:
    # ~0.3 ms of size/stride asserts and ~0.5 ms of guards on the layers' modules a step, of ~7 ms).
    # The engine passes the same tensors in the same layout every step, and the model's modules do
    # not change after loading (each engine compiles its own code object).
    "size_asserts": False,
    "alignment_asserts": False,
    "scalar_asserts": False,
    "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe,
}


_LIVE: weakref.WeakSet[CompiledDecode] = weakref.WeakSet()
_IDS = itertools.count()


@atexit.register
def _stop_all() -> None:
    for compiled in list(_LIVE):
        compiled.stop()


def _import_compiler_without_triton() -> None:
    """Load torch's compile stack with triton hidden, on a machine without CUDA.

    Dynamo and inductor import triton at import time whenever it is installed (it is in the test
    environment, and on GPU machines), which costs ~85 MB resident here and buys nothing: inductor's
    CPU backend is C++. Inside this window `import triton` fails, so the compiler records triton as
    absent; afterwards our own Triton kernels (tests run them in the interpreter) import it as usual.
    Skipped when CUDA is present, or when the compiler or triton is already loaded.
    """
    if torch.cuda.is_available() or "torch._dynamo" in sys.modules or "triton" in sys.modules:
        return
    sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError
    try:
        for module in ("torch._dynamo", "torch._inductor.codecache", "torch._inductor.codegen.cpp",
                       "torch._inductor.compile_fx", "torch._inductor.graph", "torch._inductor.scheduler"):
            importlib.import_module(module)
    finally:
        del sys.modules["triton"]


class CompiledDecode:
    """The compiled layers step for decode batches of one DecoderModel; usable once `ready`."""

    def __init__(self, model, kv_dtype: torch.dtype, block_size: int) -> None:
        self.model = model
        self.kv_dtype = kv_dtype
        self.block_size = block_size
        # A code object of its own: dynamo caches compiled variants per code object (8 at most), so
        # engines in one process (replicas, several models) would otherwise share, and exhaust, one cache.
        _import_compiler_without_triton()
        code = run_layers.__code__.replace(co_name=f"run_layers_{next(_IDS)}")
        own = types.FunctionType(code, run_layers.__globals__, code.co_name)
        self.step = torch.compile(own, dynamic=True, fullgraph=True, options=_OPTIONS)
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        _LIVE.add(self)

    def start(self) -> None:
        """Compile in the background; the runner keeps using eager steps until `ready` is set."""
        self._thread = threading.Thread(target=self._warm, name="compile-decode", daemon=True)
        self._thread.start()

    def disable(self, cause: BaseException) -> None:
        """Give the decode step back to eager for good (a compiled call failed at run time)."""
        self.ready.clear()
        self.failed = cause
        log.warning("the compiled decode step failed (%r): decoding eagerly from now on", cause)

    def stop(self, timeout: float = 120.0) -> None:
        """Compile no further variant and wait for the one in progress: a process must not exit while
        inductor runs on this thread (its C++ threads then abort the interpreter's shutdown)."""
        self._cancel.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until compiled (tests, benchmarks); False if it failed, timed out or was never started."""
        if self._thread is None:
            return False
        self._thread.join(timeout)  # the thread ends once compiled or failed
        return self.ready.is_set()

    def _warm(self) -> None:
        start = time.perf_counter()
        try:
            # Build the C++ decode-attention kernel first (first run only), so the graph calls it; the eager
            # steps pick it up as soon as it is loaded.
            cpu_decode_attention.load()
            with torch.inference_mode():
                for batch_size, blocks in _WARM_SHAPES:
                    if self._cancel.is_set():
                        return
                    self._run_synthetic(batch_size, blocks)
            self.ready.set()
            log.info("compiled decode step ready in %.1f s", time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - a compile failure leaves the eager path in charge
            self.failed = exc
            log.warning("torch.compile of the decode step failed, staying eager: %r", exc)
        finally:
            release_omp_pool()  # this thread's OpenMP pool must not compete with the engine thread's
            gc.collect()
            release_freed_heap()  # the compiler's temporaries: ~15 MB resident back

    def _run_synthetic(self, batch_size: int, blocks: int) -> None:
        """One compiled call per variant, on scratch KV memory (never the engine's)."""
        spec = self.model.spec
        param = self.model.model.norm.weight
        size = self.block_size
        shape = (batch_size * blocks + 1, size, spec.num_kv_heads, spec.head_dim)
        layers = self.model.model.layers
        # Like the engine's KV memory: ordinary tensors (dynamo guards on that), one per layer (and on aliasing).
        with torch.inference_mode(False):
            keys = [torch.zeros(shape, dtype=self.kv_dtype) for _ in layers]
            values = [torch.zeros(shape, dtype=self.kv_dtype) for _ in layers]
        table = torch.arange(batch_size * blocks).view(batch_size, blocks) + 1
        lens = torch.full((batch_size,), (blocks - 1) * size + 1)
        positions = lens - 1
        slots = table[:, -1] * size
        batch = DecodeBatch(slots, table, lens, torch.tensor(table[:, 0].tolist()))  # strides as decode_view's
        x = torch.randn(batch_size, spec.hidden_size, dtype=param.dtype)
        tables = {name: table(positions) for name, table in self.model.rotary.items()}
        cos_sins = [tables[layer.rope] for layer in layers]  # shared per rope kind, as in the forward
        self.step(layers, x, cos_sins, batch, keys, values)
