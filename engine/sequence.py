"""Sequence: one request in flight, from its prompt to its finish reason."""

from __future__ import annotations

import time

from engine.detokenizer import IncrementalDetokenizer
from engine.guided import TokenMatcher
from engine.outputs import RequestOutput, StreamChunk
from engine.request import Request
from engine.sampler import SamplingState, TokenLogprob
from engine.sampling_params import SamplingParams
from engine.stop_strings import StopStringMatcher
from engine.tokenizer import Tokenizer


class Sequence:
    """Tokens, text and stop state of one request; `append` applies every stop rule to a new token."""

    def __init__(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, tokenizer: Tokenizer,
        max_tokens: int, matcher: TokenMatcher | None = None,
    ) -> None:
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.params = params
        self.max_tokens = max_tokens
        self.request = Request(request_id, self.prompt_token_ids, max_tokens)
        # One list of generated ids, shared by the scheduler's request and the sampler's penalties.
        self.sampling = SamplingState(params, self.prompt_token_ids, tokenizer.eos_token_ids,
                                      output_token_ids=self.request.output_token_ids, matcher=matcher)
        self.detokenizer = IncrementalDetokenizer(tokenizer.hf, self.prompt_token_ids, params.skip_special_tokens)
        self.stopper = StopStringMatcher(params.stop)
        self.eos_token_ids = set() if params.ignore_eos else set(tokenizer.eos_token_ids)
        self.stop_token_ids = set(params.stop_token_ids)
        self.text_parts: list[str] = []
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.created = time.perf_counter()
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.inter_token_latencies: list[float] = []

    @property
    def output_token_ids(self) -> list[int]:
        return self.sampling.output_token_ids

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token_id: int, logprob: TokenLogprob | None) -> StreamChunk:
        """Record a sampled token; return what it adds to the stream (possibly the last chunk)."""
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        else:
            self.inter_token_latencies.append(now - self.last_token_at)
        self.last_token_at = now
        self.output_token_ids.append(token_id)
        if self.logprobs is not None and logprob is not None:
            self.logprobs.append(logprob)
        text = ""
        stopped_by_string = False
        matcher = self.sampling.matcher
        if token_id in self.eos_token_ids:
            self._finish("stop", None)
        elif token_id in self.stop_token_ids:
            self._finish("stop", token_id)
        elif matcher is not None and not matcher.advance(token_id):
            # Only a token the grammar masked out gets here (an EOS under ignore_eos): end cleanly.
            self._finish("stop", None)
        else:
            result = self.stopper.feed(self.detokenizer.add(token_id))
            text = result.text
            if result.stopped:
                stopped_by_string = True
                self._finish("stop", result.stop_string)
            elif matcher is not None and matcher.done:
                self._finish("stop", None)
            elif len(self.output_token_ids) >= self.max_tokens:
                self._finish("length", None)
        if self.finished and not stopped_by_string:
            text += self._drain()
        self.text_parts.append(text)
        return StreamChunk(
            self.request_id, text, [token_id], [logprob] if logprob is not None else None,
            self.finish_reason, self.stop_reason,
        )

    def _drain(self) -> str:
        """At the end, release what the detokenizer and the stop matcher still hold back."""
        result = self.stopper.feed(self.detokenizer.flush())
        if result.stopped:
            self._finish("stop", result.stop_string)
            return result.text
        return result.text + self.stopper.flush()

    def fail(self, reason: str) -> None:
        """End the sequence without a normal stop (aborted by the caller, or its engine step failed)."""
        self._finish(reason, None)

    def _finish(self, reason: str, stop_reason: str | int | None) -> None:
        self.finish_reason = reason
        self.stop_reason = stop_reason

    def output(self) -> RequestOutput:
        done = time.perf_counter()
        metrics = {"total_s": done - self.created}
        if self.first_token_at is not None:
            metrics["ttft_s"] = self.first_token_at - self.created
        return RequestOutput(
            self.request_id, self.prompt_token_ids, "".join(self.text_parts), list(self.output_token_ids),
            self.finish_reason or "length", self.stop_reason, self.logprobs, metrics,
        )
