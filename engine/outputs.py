"""What generation returns: a finished RequestOutput, or a StreamChunk per step while streaming."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.sampler import TokenLogprob


@dataclass(frozen=True)
class RequestOutput:
    """One finished generation.

    finish_reason is "stop" (EOS, a stop token or a stop string) or "length" (max_tokens or the
    context window); stop_reason is the stop string or stop token id that ended it, if any.
    """

    request_id: str
    prompt_token_ids: list[int]
    text: str
    token_ids: list[int]
    finish_reason: str
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamChunk:
    """The new text and tokens of one step of one request; the last chunk has finish_reason set.

    finish_reason is "stop" or "length" as in RequestOutput, "abort" when the request was
    cancelled, or "error" when an engine fault ended it (then `error` says what happened).
    """

    request_id: str
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    error: str | None = None  # set with finish_reason "error": why the engine failed this request

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
