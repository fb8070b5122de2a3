"""EngineCore: schedule -> run the model on the batch -> sample -> detokenize -> stop checks -> outputs."""

from __future__ import annotations

import itertools
import logging
import os
import time

import torch

from agent_kernels import cpu_decode_attention
from engine.compiled_decode import CompiledDecode
from engine.config import EngineConfig
from engine.errors import ContextLengthError, EngineStepError, InvalidRequestError
from engine.guided import GrammarCompiler
from engine.kv_cache import KVCacheManager
from engine.kv_tensors import resolve_kv_dtype
from engine.loader import LoadedModel, load_model
from engine.metrics import EngineMetrics
from engine.model_runner import GraphOptions, ModelRunner, plan_kv_blocks
from engine.native_decode import NativeDecode
from engine.outputs import StreamChunk
from engine.request import Request
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler, SchedulerConfig
from engine.scheduler_output import ScheduledChunk, SchedulerOutput
from engine.sequence import Sequence

log = logging.getLogger(__name__)


def configure_threads(num_threads: int | None) -> None:
    """Use the cores this process may run on (not the machine's count) unless told otherwise."""
    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(num_threads)


class EngineCore:
    """One model's requests, stepped synchronously. Not thread-safe: one thread drives it."""

    @classmethod
    def create(cls, config: EngineConfig, loaded: LoadedModel | None = None) -> EngineCore:
        """Set threads, load the model the config names (unless given), build and warm up a core."""
        if config.tensor_parallel_size > 1 and cls is EngineCore:
            from engine.distributed.core import TensorParallelCore  # torch.distributed only when asked for

            return TensorParallelCore.create(config, loaded)
        if config.data_parallel_size > 1:
            raise ValueError(f"data_parallel_size={config.data_parallel_size}: an engine core is one replica; "
                             "replicas are for serving (serve, mcp, chat, bench; DataParallelEngine)")
        configure_threads(config.num_threads)
        if loaded is None:
            loaded = load_model(
                config.model,
                dtype=config.dtype,
                device=config.device,
                allow_fallback=config.allow_fallback,
                chat_template=config.chat_template,
                isq=config.isq,
                topology=config.load_topology(),
            )
        if loaded.device.type == "cpu":
            # The C++ paged decode-attention kernel, eager and compiled (built the first time, ~25 s, then
            # cached; 0.1 s to load): without it, eager decode gathers the cache through torch (3x slower).
            cpu_decode_attention.load()
        core = cls(loaded, config)
        if config.warmup:
            core.warmup()
        if core.compiled is not None:  # after the warm-up, which it would otherwise slow down
            core.compiled.start()
        return core

    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.loaded = loaded
        self.config = config
        self.tokenizer = loaded.tokenizer
        self.max_model_len = min(config.max_model_len or loaded.context_length, loaded.context_length)
        self.max_num_batched_tokens = config.max_num_batched_tokens or (
            8192 if loaded.device.type == "cuda" else 2048
        )
        self.num_blocks = plan_kv_blocks(loaded, config, self.max_model_len)
        self.grammars = GrammarCompiler(self.tokenizer.hf, int(loaded.config.vocab_size), self.tokenizer.eos_token_ids)
        self.metrics = EngineMetrics()
        self.sequences: dict[str, Sequence] = {}
        self._ids = itertools.count()
        self.runner: ModelRunner | None = None
        self.native = self._native_decode()
        self.compiled = self._compiled_decode() if self.native is None else None
        self._build()

    def _build(self) -> None:
        """Fresh block pool, scheduler and KV memory (at start and after a failed step)."""
        self.kv_manager = KVCacheManager(self.num_blocks, self.config.block_size, self.config.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(max_num_batched_tokens=self.max_num_batched_tokens, max_num_seqs=self.config.max_num_seqs),
            self.kv_manager,
        )
        self.runner = None  # drop the old KV tensors before allocating new ones
        graphs = GraphOptions(self.config.max_num_seqs, self.max_model_len) if self.config.cuda_graphs else None
        self.runner = ModelRunner(self.loaded, self.num_blocks, self.config.block_size, self.config.kv_cache_dtype,
                                  self.compiled, graphs, self.native)

    def _native_decode(self) -> NativeDecode | None:
        """The C++ decode step (CPU native models it fits, unless turned off)."""
        if not (self.config.native_decode and self.loaded.native and self.loaded.device.type == "cpu"):
            return None
        kv_dtype = resolve_kv_dtype(self.config.kv_cache_dtype, self.loaded.dtype, self.loaded.device)
        return NativeDecode.build(self.loaded.module, kv_dtype)

    def _compiled_decode(self) -> CompiledDecode | None:
        """The compiled decode step (CPU native models, unless turned off); `create` starts compiling it."""
        if not (self.config.compile and self.loaded.native and self.loaded.device.type == "cpu"):
            return None
        if getattr(self.loaded.module, "layer_devices", None) is not None:
            return None  # layers on several devices (a topology): the step hops devices eagerly
        kv_dtype = resolve_kv_dtype(self.config.kv_cache_dtype, self.loaded.dtype, self.loaded.device)
        return CompiledDecode(self.loaded.module, kv_dtype, self.config.block_size)

    # --- requests -----------------------------------------------------------------------------

    def new_sequence(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> Sequence:
        """Validate a request against the model and build its Sequence (not yet scheduled).

        Reads only immutable state, so servers may call it from any thread.
        """
        ids = [int(t) for t in prompt_token_ids]
        max_tokens = self._validate_lengths(ids, params)
        matcher = self.grammars.matcher(params.guided) if params.guided is not None else None
        request_id = request_id or f"req-{next(self._ids)}"
        return Sequence(request_id, ids, params, self.tokenizer, max_tokens, matcher)

    def validate(self, ids: list[int], params: SamplingParams) -> int:
        """Raise what a request with these prompt ids and params would be refused for; else its max_tokens."""
        max_tokens = self._validate_lengths(ids, params)
        if params.guided is not None:
            self.grammars.check(params.guided)
        return max_tokens

    def _validate_lengths(self, ids: list[int], params: SamplingParams) -> int:
        if not ids:
            raise InvalidRequestError("the prompt is empty: it encodes to zero tokens")
        vocab = int(self.loaded.config.vocab_size)
        if any(not 0 <= t < vocab for t in ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab})")
        room = self.max_model_len - len(ids)
        if room < 1:
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens but the context window of "
                f"{self.loaded.source.name} is {self.max_model_len} tokens"
            )
        if params.max_tokens is not None and params.max_tokens > room:
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens and max_tokens is {params.max_tokens}: together they "
                f"exceed the context window of {self.max_model_len} tokens (at most {room} new tokens fit)"
            )
        return params.max_tokens if params.max_tokens is not None else room

    def add(self, seq: Sequence) -> None:
        """Queue a validated sequence; refuses duplicates and requests bigger than the KV pool."""
        if seq.request_id in self.sequences:
            raise InvalidRequestError(f"request id {seq.request_id!r} is already running")
        self.scheduler.add_request(seq.request)
        self.sequences[seq.request_id] = seq
        self.metrics.prompt_tokens += len(seq.prompt_token_ids)

    def abort(self, request_id: str) -> Sequence | None:
        """Stop a request now and free its blocks; unknown or finished ids are ignored."""
        seq = self.sequences.pop(request_id, None)
        if seq is None:
            return None
        self.scheduler.finish_request(request_id)
        self.runner.release(request_id)
        seq.fail("abort")
        self.metrics.requests_aborted += 1
        return seq

    def has_unfinished(self) -> bool:
        return bool(self.sequences)

    def close(self) -> None:
        """Release what lives outside this process (a tensor-parallel core's workers); nothing here."""

    # --- the step -----------------------------------------------------------------------------

    def step(self) -> list[StreamChunk]:
        """Run one scheduled batch; return one StreamChunk per request that produced a token."""
        output = self.scheduler.schedule()
        self.metrics.preemptions += len(output.preempted)
        if output.is_empty:
            return []
        sampling = [self.sequences[c.request_id] for c in output.chunks if c.sample]
        try:
            sampled = self.runner.execute(output, [s.sampling for s in sampling])
        except Exception as exc:  # the model or the sampler failed: isolate, fail, rebuild
            return self.recover(EngineStepError(self._culprits(output), exc))
        self.scheduler.update_from_output(output)
        self.metrics.steps += 1
        self.metrics.computed_tokens += output.num_batched_tokens
        chunks = []
        for seq, token, logprob in zip(sampling, sampled.token_ids, sampled.logprobs, strict=True):
            chunks.append(seq.append(token, logprob))
            self.metrics.generation_tokens += 1
            if seq.finished:
                self._finish(seq)
        return chunks

    def _finish(self, seq: Sequence) -> None:
        self.sequences.pop(seq.request_id, None)
        self.scheduler.finish_request(seq.request_id)
        self.runner.release(seq.request_id)
        self.metrics.requests_finished += 1
        if seq.first_token_at is not None:
            self.metrics.ttft.append(seq.first_token_at - seq.created)
        self.metrics.inter_token_latency.extend(seq.inter_token_latencies)

    def _culprits(self, output: SchedulerOutput) -> list[str]:
        """Which requests of a failed step fail on their own (each chunk re-run alone).

        Re-running is safe: a chunk writes only its own new slots, and the engine is rebuilt
        afterwards anyway. When no chunk fails alone (a fault of the batch as a whole, say out of
        memory), every request of the step is to blame.
        """
        if len(output.chunks) == 1:
            return [output.chunks[0].request_id]
        culprits = []
        for chunk in output.chunks:
            try:
                self.runner.forward(SchedulerOutput([chunk]))
            except Exception:  # noqa: BLE001 - any failure marks the request
                culprits.append(chunk.request_id)
        return culprits or [c.request_id for c in output.chunks]

    def recover(self, error: EngineStepError) -> list[StreamChunk]:
        """After a failed step: fail its culprits, rebuild pool/scheduler/KV, requeue everyone else.

        Returns a finishing "error" chunk for each failed request.
        """
        failed = [self.sequences.pop(rid) for rid in error.request_ids if rid in self.sequences]
        message = f"the engine step running this request raised {error.cause!r}; the engine was rebuilt"
        for seq in failed:
            seq.fail("error")
        survivors = list(self.sequences.values())
        for seq in [*failed, *survivors]:
            self.runner.release(seq.request_id)
        self._build()
        for seq in survivors:
            seq.request.num_computed_tokens = 0  # their cached keys/values are gone: recompute
            self.scheduler.add_request(seq.request)
        self.metrics.engine_restarts += 1
        self.metrics.requests_failed += len(failed)
        log.error("engine step failed (%r): failed %d request(s), rebuilt the engine, requeued %d",
                  error.cause, len(failed), len(survivors))
        return [StreamChunk(seq.request_id, "", [], None, "error", None, message) for seq in failed]

    def fail_all(self, cause: BaseException) -> list[StreamChunk]:
        """Fail every request (a fault outside the model forward left the state unknown)."""
        return self.recover(EngineStepError(list(self.sequences), cause))

    # --- utilities ----------------------------------------------------------------------------

    def warmup(self) -> None:
        """Run one short request so the first real one does not pay for lazy initialisation."""
        start = time.perf_counter()
        prompt = [min(i + 1, int(self.loaded.config.vocab_size) - 1) for i in range(16)]
        seq = self.new_sequence(prompt, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), "warmup")
        self.add(seq)
        while seq.request_id in self.sequences:
            self.step()
        self.metrics = EngineMetrics()
        log.info("warm-up done in %.2f s", time.perf_counter() - start)

    def next_token_logits(self, prompt_token_ids: list[int]) -> torch.Tensor:
        """Raw logits [vocab] after `prompt_token_ids` (for tests and scoring); needs an idle engine."""
        return self.prompt_logits(prompt_token_ids, every_position=False)[0]

    def prompt_logits(self, prompt_token_ids: list[int], every_position: bool = True) -> torch.Tensor:
        """Teacher-forced raw logits [len(ids), vocab]: row t predicts token t + 1 (one forward over
        the whole prompt, no sampling); with every_position=False only the last row. Needs an idle engine."""
        request = Request("logits-probe", list(prompt_token_ids), max_tokens=1)
        if not self.kv_manager.allocate_slots(request, len(request.prompt_token_ids)):
            raise InvalidRequestError("the KV cache has no room for this prompt right now")
        try:
            chunk = ScheduledChunk(request.request_id, request.prompt_token_ids, 0,
                                   list(self.kv_manager.block_table(request.request_id)), True)
            return self.runner.forward(SchedulerOutput([chunk]), every_position=every_position)
        finally:
            self.kv_manager.free(request)
            self.runner.release(request.request_id)

    def stats(self) -> dict[str, float]:
        kv = self.kv_manager.stats()
        return {
            "running": self.scheduler.num_running,
            "waiting": self.scheduler.num_waiting,
            "kv_blocks_total": kv.num_blocks,
            "kv_blocks_used": kv.used_blocks,
            "prefix_cache_queries": kv.prefix_queries,
            "prefix_cache_hits": kv.prefix_hits,
            **self.metrics.summary(),
        }
