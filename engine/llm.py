"""LLM: the Python API for agent scripts. Load a model once, then generate, chat or stream."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from collections.abc import Sequence as Seq

import torch

from engine.errors import ContextLengthError, InvalidRequestError
from engine.loader import LoadedModel, load_model
from engine.model_runner import ModelRunner
from engine.outputs import RequestOutput, StreamChunk
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence

log = logging.getLogger(__name__)

Prompt = str | list[int]
Messages = list[dict]


class LLM:
    """A loaded model and a generation loop.

    >>> llm = LLM()                                   # the embedded SmolLM2-135M-Instruct
    >>> out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))
    >>> out[0].text
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        device: str = "auto",
        allow_fallback: bool = True,
        chat_template: str | None = None,
        max_num_seqs: int = 32,
        prefill_chunk_size: int = 512,
        num_threads: int | None = None,
    ) -> None:
        if max_num_seqs < 1:
            raise ValueError(f"invalid max_num_seqs={max_num_seqs}: must be >= 1")
        if prefill_chunk_size < 1:
            raise ValueError(f"invalid prefill_chunk_size={prefill_chunk_size}: must be >= 1")
        _configure_threads(num_threads)
        self.loaded: LoadedModel = load_model(
            model, dtype=dtype, device=device, allow_fallback=allow_fallback, chat_template=chat_template
        )
        self.tokenizer = self.loaded.tokenizer
        self.runner = ModelRunner(self.loaded)
        self.max_num_seqs = max_num_seqs
        self.prefill_chunk_size = prefill_chunk_size
        self._ids = itertools.count()

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    # --- public API ---------------------------------------------------------------------------

    def generate(
        self, prompts: Prompt | Seq[Prompt], params: SamplingParams | Seq[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        """Complete each prompt (text, or token ids); one RequestOutput per prompt, in order."""
        batch = [prompts] if _is_single_prompt(prompts) else list(prompts)
        seqs = [self._sequence(p, q) for p, q in zip(batch, _per_prompt(params, len(batch)), strict=True)]
        for _ in self._run(seqs):
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
        yield from self._run([self._sequence(prompt, params or SamplingParams())])

    def stream_chat(
        self, messages: Messages, params: SamplingParams | None = None, tools: list[dict] | None = None,
        **template_kwargs,
    ) -> Iterator[StreamChunk]:
        """Stream the answer to one conversation."""
        yield from self.stream(self.tokenizer.encode_chat(messages, tools, **template_kwargs), params)

    # --- the loop -----------------------------------------------------------------------------

    def _sequence(self, prompt: Prompt, params: SamplingParams) -> Sequence:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise InvalidRequestError("the prompt is empty: it encodes to zero tokens")
        vocab = int(self.loaded.config.vocab_size)
        if any(not 0 <= t < vocab for t in ids):
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab})")
        room = self.context_length - len(ids)
        if room < 1:
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens but the context window of "
                f"{self.loaded.source.name} is {self.context_length} tokens"
            )
        if params.max_tokens is not None and params.max_tokens > room:
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens and max_tokens is {params.max_tokens}: together they "
                f"exceed the context window of {self.context_length} tokens (at most {room} new tokens fit)"
            )
        max_tokens = params.max_tokens if params.max_tokens is not None else room
        return Sequence(f"req-{next(self._ids)}", ids, params, self.tokenizer, max_tokens)

    def _run(self, seqs: list[Sequence]) -> Iterator[StreamChunk]:
        for start in range(0, len(seqs), self.max_num_seqs):
            yield from self._run_group(seqs[start : start + self.max_num_seqs])

    def _run_group(self, seqs: list[Sequence]) -> Iterator[StreamChunk]:
        runner = self.runner
        runner.reserve(len(seqs), max(len(s.prompt_token_ids) + s.max_tokens for s in seqs))
        rows = []
        for slot, seq in enumerate(seqs):
            seq.slot = slot
            rows.append(self._prefill(seq))
        logits = torch.cat(rows)
        active = list(seqs)
        while True:
            sampled = runner.sample(logits, [s.sampling for s in active])
            for seq, token, logprob in zip(active, sampled.token_ids, sampled.logprobs, strict=True):
                yield seq.append(token, logprob)
            for seq in active:
                if seq.finished:
                    runner.release(seq.slot)
            active = [s for s in active if not s.finished]
            if not active:
                return
            logits = runner.forward(
                [[s.output_token_ids[-1]] for s in active],
                [s.slot for s in active],
                [len(s.prompt_token_ids) + len(s.output_token_ids) - 1 for s in active],
            )

    def _prefill(self, seq: Sequence) -> torch.Tensor:
        """Run the prompt through the model in chunks; logits [1, vocab] of its last token."""
        ids = seq.prompt_token_ids
        logits = None
        for offset in range(0, len(ids), self.prefill_chunk_size):
            chunk = ids[offset : offset + self.prefill_chunk_size]
            logits = self.runner.forward([chunk], [seq.slot], [offset])
        return logits


def _configure_threads(num_threads: int | None) -> None:
    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if num_threads < 1:
        raise ValueError(f"invalid num_threads={num_threads}: must be >= 1")
    torch.set_num_threads(num_threads)


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
