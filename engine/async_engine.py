"""AsyncEngine: the EngineCore on one dedicated thread, exposed to asyncio as streams of chunks."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import AsyncIterator

from engine.config import EngineConfig
from engine.core import EngineCore
from engine.errors import EngineError, InvalidRequestError, RequestFailedError
from engine.loader import LoadedModel
from engine.omp_pool import release_omp_pool
from engine.outputs import StreamChunk
from engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.5


class AsyncEngine:
    """Serve many concurrent requests: `async for chunk in engine.generate(prompt, params)`.

    The engine thread owns the core; callers talk to it through a command queue, and each
    request's chunks come back through its own asyncio queue. Cancelling (or closing) the
    iterator aborts the request and frees its KV blocks. A failed step fails only the requests
    it was running (their iterators raise RequestFailedError); the core is rebuilt and goes on.
    """

    def __init__(self, config: EngineConfig | None = None, *, loaded: LoadedModel | None = None) -> None:
        self.config = config or EngineConfig()
        self.core = EngineCore.create(self.config, loaded)
        self.loaded = self.core.loaded
        self.tokenizer = self.loaded.tokenizer
        release_omp_pool()  # the engine thread must own the only OpenMP pool (see engine/omp_pool.py)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-core", daemon=True)
        self._thread.start()

    # --- asyncio side -------------------------------------------------------------------------

    async def generate(
        self, prompt: str | list[int], params: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[StreamChunk]:
        """Stream one request; the last chunk has finish_reason set. Raises on invalid input."""
        if self._stopping.is_set():
            raise EngineError("the engine is shut down")
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        request_id = request_id or f"req-{uuid.uuid4().hex}"
        if request_id in self._streams:
            raise InvalidRequestError(f"request id {request_id!r} is already in use")
        seq = self.core.new_sequence(ids, params or SamplingParams(), request_id)
        inbox: asyncio.Queue = asyncio.Queue()
        self._streams[seq.request_id] = (asyncio.get_running_loop(), inbox)
        self._send(("add", seq))
        finished = False
        try:
            while True:
                item = await inbox.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if item.finish_reason == "error":
                    finished = True
                    raise RequestFailedError(f"request {item.request_id} failed: {item.error}")
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            self._streams.pop(seq.request_id, None)
            if not finished:
                self._send(("abort", seq.request_id))

    def check(self, prompt: str | list[int], params: SamplingParams) -> None:
        """Raise what generate() would raise for this request (bad params, prompt too long), now."""
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        self.core.validate([int(t) for t in ids], params)

    async def run_on_engine_thread(self, fn, *args):
        """Run `fn(*args)` on the engine thread between steps and return its result.

        For other torch work of the same process (an embedding model): it then shares the engine
        thread's OpenMP pool instead of creating a second one (see engine/omp_pool.py).
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._send(("call", (loop, future, fn, args)))
        return await future

    def abort(self, request_id: str) -> None:
        """Stop a request; its iterator ends with finish_reason "abort"."""
        self._send(("abort", request_id))

    def stats(self) -> dict[str, float]:
        """Counters for /metrics (read without locking: each value is one consistent int/float)."""
        return self.core.stats()

    def shutdown(self) -> None:
        """Stop the engine thread; requests still running end with RequestFailedError."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.core.close()

    # --- engine thread ------------------------------------------------------------------------

    def _send(self, command: tuple) -> None:
        self._commands.put(command)
        self._wake.set()

    def _run(self) -> None:
        core = self.core
        while not self._stopping.is_set():
            self._apply_commands()
            if not core.has_unfinished():
                self._wake.wait(_IDLE_WAIT_S)
                self._wake.clear()
                continue
            try:
                chunks = core.step()
            except Exception as exc:  # a bug outside the model forward: fail what was running, go on
                log.exception("engine step raised outside the model forward")
                chunks = core.fail_all(exc)
            for chunk in chunks:
                self._deliver(chunk.request_id, chunk)
        for seq in list(core.sequences.values()):
            core.abort(seq.request_id)
            self._deliver(seq.request_id, RequestFailedError("the engine shut down"))

    def _apply_commands(self) -> None:
        while True:
            try:
                kind, payload = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                try:
                    self.core.add(payload)
                except EngineError as exc:
                    self._deliver(payload.request_id, exc)
            elif kind == "call":
                self._call(*payload)
            elif kind == "abort":
                seq = self.core.abort(payload)
                if seq is not None:
                    self._deliver(payload, StreamChunk(payload, "", [], None, "abort"))

    @staticmethod
    def _call(loop, future, fn, args) -> None:
        try:
            result, error = fn(*args), None
        except Exception as exc:  # noqa: BLE001 - handed back to the awaiting caller
            result, error = None, exc

        def settle() -> None:
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the caller's loop is closed
            pass

    def _deliver(self, request_id: str, item) -> None:
        target = self._streams.get(request_id)
        if target is not None:
            loop, inbox = target
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, item)
            except RuntimeError:  # the caller's event loop is closed: nobody is listening any more
                self._streams.pop(request_id, None)
