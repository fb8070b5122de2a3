"""Turning an API request into engine requests: sampling params, n parallel choices, logprobs, SSE."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agent_runtime.openai.errors import ApiError
from agent_runtime.openai.protocol import SamplingFields
from engine import AsyncEngine, SamplingParams, StreamChunk
from engine.guided import GuidedDecoding
from engine.sampler import TokenLogprob


def sampling_params(
    req: SamplingFields, logprobs: int | None, max_tokens: int | None, index: int, *,
    guided: GuidedDecoding | None = None, skip_special_tokens: bool = True,
) -> SamplingParams:
    """SamplingParams for choice `index` (a seeded request gives each choice its own seed)."""
    for name in ("seed", "top_k"):  # the sampler hands them to torch as 64-bit integers
        value = getattr(req, name)
        if value is not None and not -(2**63) <= value < 2**63:
            raise ApiError(400, f"{name}={value} is out of range: must fit a signed 64-bit integer", param=name,
                           code="invalid_value")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return SamplingParams(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        repetition_penalty=req.repetition_penalty or 1.0,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias=_logit_bias(req.logit_bias or {}),
        seed=None if req.seed is None else req.seed + index,
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        stop=tuple(stop),
        stop_token_ids=tuple(req.stop_token_ids or ()),
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
        guided=guided,
        skip_special_tokens=skip_special_tokens,
    )


def _logit_bias(bias: dict[str, float]) -> dict[int, float]:
    token_bias = {}
    for token, value in bias.items():
        try:
            token_bias[int(token)] = value
        except ValueError:
            raise ApiError(400, f"logit_bias key {token[:40]!r} is not a token id: keys must be integers",
                           param="logit_bias", code="invalid_value") from None
    return token_bias


@dataclass
class ChoiceResult:
    """Everything one finished choice produced."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    first_token_at: float | None = None


async def run_choices(
    engine: AsyncEngine, prompt_ids: list[int], params: list[SamplingParams]
) -> list[ChoiceResult]:
    """Run every choice to the end (concurrently) and collect it."""
    results = [ChoiceResult(i) for i in range(len(params))]
    async for index, chunk in stream_choices(engine, prompt_ids, params):
        result = results[index]
        if result.first_token_at is None:
            result.first_token_at = time.perf_counter()
        result.text += chunk.text
        result.token_ids.extend(chunk.token_ids)
        result.logprobs.extend(chunk.logprobs or [])
        result.finish_reason = chunk.finish_reason or result.finish_reason
    return results


async def stream_choices(
    engine: AsyncEngine, prompt_ids: list[int], params: list[SamplingParams]
) -> AsyncIterator[tuple[int, StreamChunk]]:
    """Merge the chunk streams of n choices; closing this iterator aborts every choice."""
    if len(params) == 1:
        async for chunk in engine.generate(prompt_ids, params[0]):
            yield 0, chunk
        return
    merged: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(index: int, p: SamplingParams) -> None:
        try:
            async for chunk in engine.generate(prompt_ids, p):
                await merged.put((index, chunk))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await merged.put((index, exc))
        finally:
            await merged.put((index, done))

    tasks = [asyncio.create_task(pump(i, p)) for i, p in enumerate(params)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await merged.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def token_text(engine: AsyncEngine, token_id: int) -> str:
    return engine.tokenizer.hf.decode([token_id])


def chat_logprobs(engine: AsyncEngine, items: list[TokenLogprob]) -> dict:
    """The chat API's `logprobs` object."""
    def entry(token_id: int, logprob: float) -> dict:
        text = token_text(engine, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {
        "content": [
            {**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]} for lp in items
        ]
    }


def sse(payload: dict | str) -> str:
    """One server-sent event."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


async def with_keepalive(events: AsyncIterator[str], every_s: float) -> AsyncIterator[str]:
    """Interleave SSE comment lines while `events` is silent, so proxies keep the connection open."""
    iterator = events.__aiter__()
    pending = asyncio.ensure_future(iterator.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield ": keep-alive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            yield event
            pending = asyncio.ensure_future(iterator.__anext__())
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await iterator.aclose()
