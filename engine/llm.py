"""LLM: the Python API for agent scripts. Load a model once, then generate, chat or stream."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence as Seq

import torch

from engine.config import EngineConfig
from engine.core import EngineCore
from engine.errors import InvalidRequestError, RequestFailedError
from engine.outputs import RequestOutput, StreamChunk
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence

Prompt = str | list[int]
Messages = list[dict]


class LLM:
    """A loaded model and a continuously batched engine, driven synchronously.

    >>> llm = LLM()                                   # the embedded SmolLM2-135M-Instruct
    >>> out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))
    >>> out[0].text

    Options are those of `engine.config.EngineConfig` (dtype, device, max_num_seqs,
    max_num_batched_tokens, block_size, enable_prefix_caching, kv_cache_memory, ...).
    """

    def __init__(self, model: str | None = None, **options) -> None:
        self.config = EngineConfig(model=model, **options)
        self.core = EngineCore.create(self.config)
        self.loaded = self.core.loaded
        self.tokenizer = self.loaded.tokenizer

    @property
    def context_length(self) -> int:
        return self.core.max_model_len

    # --- public API ---------------------------------------------------------------------------

    def generate(
        self, prompts: Prompt | Seq[Prompt], params: SamplingParams | Seq[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        """Complete each prompt (text, or token ids), all batched together; outputs in prompt order."""
        batch = [prompts] if _is_single_prompt(prompts) else list(prompts)
        seqs = [self._sequence(p, q) for p, q in zip(batch, _per_prompt(params, len(batch)), strict=True)]
        for _ in self._run(seqs, raise_errors=False):
            pass
        return [s.output() for s in seqs]

    def chat(
        self,
        messages: Messages | Seq[Messages],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        tools: list[dict] | None = None,
        **template_kwargs,
    ) -> list[RequestOutput]:
        """Answer one conversation (or several), rendered through the model's chat template."""
        conversations = [messages] if _is_single_conversation(messages) else list(messages)
        prompts = [self.tokenizer.encode_chat(list(c), tools, **template_kwargs) for c in conversations]
        return self.generate(prompts, params)

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamChunk]:
        """Yield the completion of one prompt chunk by chunk; the last chunk carries finish_reason."""
        yield from self._run([self._sequence(prompt, params or SamplingParams())], raise_errors=True)

    def stream_chat(
        self, messages: Messages, params: SamplingParams | None = None, tools: list[dict] | None = None,
        **template_kwargs,
    ) -> Iterator[StreamChunk]:
        """Stream the answer to one conversation."""
        yield from self.stream(self.tokenizer.encode_chat(messages, tools, **template_kwargs), params)

    def next_token_logits(self, prompt: Prompt) -> torch.Tensor:
        """The model's raw logits [vocab] for the token after `prompt`."""
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        return self.core.next_token_logits(ids)

    def prompt_logits(self, prompt: Prompt) -> torch.Tensor:
        """Teacher-forced logits [len(ids), vocab] over `prompt`: row t scores the token after t."""
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        return self.core.prompt_logits(ids)

    def stats(self) -> dict[str, float]:
        """Engine counters: requests, tokens, KV blocks, prefix-cache hits, latency percentiles."""
        return self.core.stats()

    def close(self) -> None:
        """Stop what the engine runs outside this process (tensor-parallel workers); idempotent."""
        self.core.close()

    # --- the loop -----------------------------------------------------------------------------

    def _sequence(self, prompt: Prompt, params: SamplingParams) -> Sequence:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        return self.core.new_sequence(ids, params)

    def _run(self, seqs: list[Sequence], raise_errors: bool) -> Iterator[StreamChunk]:
        """Step the engine until every sequence finished; abort what is left if the caller stops early.

        A request an engine fault ended raises RequestFailedError when `raise_errors`, else it
        finishes with finish_reason "error" and the others go on.
        """
        added = []
        try:
            for seq in seqs:
                self.core.add(seq)
                added.append(seq)
            mine = {s.request_id for s in seqs}
            while any(not s.finished for s in seqs):
                for chunk in self.core.step():
                    if chunk.request_id not in mine:
                        continue
                    if chunk.finish_reason == "error" and raise_errors:
                        raise RequestFailedError(f"request {chunk.request_id} failed: {chunk.error}")
                    yield chunk
        finally:
            for seq in added:
                if not seq.finished:
                    self.core.abort(seq.request_id)


def _is_single_prompt(prompts) -> bool:
    return isinstance(prompts, str) or (isinstance(prompts, list) and (not prompts or isinstance(prompts[0], int)))


def _is_single_conversation(messages) -> bool:
    return isinstance(messages, list) and (not messages or isinstance(messages[0], dict))


def _per_prompt(params, count: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * count
    if isinstance(params, SamplingParams):
        return [params] * count
    params = list(params)
    if len(params) != count:
        raise InvalidRequestError(f"got {len(params)} SamplingParams for {count} prompts")
    return params
