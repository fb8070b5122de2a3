"""POST /v1/completions: raw prompt completion (string, strings, or token ids), streamed or whole."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from agent_runtime.openai.errors import ApiError, error_body, to_api_error
from agent_runtime.openai.generation import (
    run_choices,
    sampling_params,
    sse,
    stream_choices,
    token_text,
    with_keepalive,
)
from agent_runtime.openai.protocol import CompletionRequest
from agent_runtime.openai.serving import Admission, usage
from agent_runtime.openai.structured import request_constraint

router = APIRouter()


def _prompts(prompt) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    if not prompt:
        raise ApiError(400, "prompt must not be empty", param="prompt")
    return list(prompt)


def legacy_logprobs(engine, items, text_offset: int) -> dict:
    """The completions API's `logprobs` object (tokens, token_logprobs, top_logprobs, text_offset)."""
    tokens, offsets, offset = [], [], text_offset
    for lp in items:
        text = token_text(engine, lp.token_id)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [lp.logprob for lp in items],
        "top_logprobs": [{token_text(engine, t): v for t, v in lp.top} for lp in items],
        "text_offset": offsets,
    }


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    if body.suffix:
        raise ApiError(400, "suffix is not supported: this server does not do fill-in-the-middle", param="suffix",
                       code="unsupported_parameter")
    if body.best_of not in (None, body.n):
        raise ApiError(400, "best_of is not supported (use n)", param="best_of", code="unsupported_parameter")
    admission = Admission.begin(request, body.model)
    try:
        engine = admission.engine
        prompts = [engine.tokenizer.encode(p) if isinstance(p, str) else p for p in _prompts(body.prompt)]
        guided = request_constraint(body, body.response_format)
        params = [sampling_params(body, body.logprobs, body.max_tokens or 16, i, guided=guided) for i in range(body.n)]
        for prompt_ids in prompts:
            engine.check(prompt_ids, params[0])
    except BaseException:
        admission.end()
        raise
    meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": admission.model}
    if body.stream:
        events = _stream(admission, prompts, params, meta, body)
        keepalive = request.app.state.runtime.settings.keepalive_s
        return StreamingResponse(with_keepalive(events, keepalive), media_type="text/event-stream")
    try:
        start = time.perf_counter()
        choices, completion, first = [], 0, None
        for p_index, prompt_ids in enumerate(prompts):
            echo = engine.tokenizer.decode(prompt_ids, skip_special_tokens=False) if body.echo else ""
            for r in await run_choices(engine, prompt_ids, params):
                completion += len(r.token_ids)
                first = first or r.first_token_at
                choices.append({
                    "index": p_index * body.n + r.index,
                    "text": echo + r.text,
                    "logprobs": legacy_logprobs(engine, r.logprobs, len(echo)) if body.logprobs is not None else None,
                    "finish_reason": r.finish_reason,
                })
    finally:
        admission.end()
    prompt_tokens = sum(len(p) for p in prompts)
    return {**meta, "object": "text_completion", "choices": choices,
            "usage": usage(prompt_tokens, completion, start, first)}


async def _stream(admission: Admission, prompts, params, meta, body: CompletionRequest):
    engine = admission.engine
    start = time.perf_counter()
    first, completion = None, 0
    try:
        try:
            for p_index, prompt_ids in enumerate(prompts):
                if body.echo:
                    for i in range(body.n):
                        text = engine.tokenizer.decode(prompt_ids, skip_special_tokens=False)
                        yield sse({**meta, "object": "text_completion", "choices": [
                            {"index": p_index * body.n + i, "text": text, "logprobs": None, "finish_reason": None}]})
                async for index, chunk in stream_choices(engine, prompt_ids, params):
                    first = first or time.perf_counter()
                    completion += len(chunk.token_ids)
                    if not (chunk.text or chunk.finish_reason):
                        continue
                    logprobs = legacy_logprobs(engine, chunk.logprobs or [], 0) if body.logprobs is not None else None
                    yield sse({**meta, "object": "text_completion", "choices": [
                        {"index": p_index * body.n + index, "text": chunk.text, "logprobs": logprobs,
                         "finish_reason": chunk.finish_reason}]})
        except Exception as exc:  # noqa: BLE001 - reported in-stream: the status line is already sent
            err = to_api_error(exc)
            yield sse(error_body(err.message, err.type, err.param, err.code))
        if body.stream_options and body.stream_options.include_usage:
            prompt_tokens = sum(len(p) for p in prompts)
            yield sse({**meta, "object": "text_completion", "choices": [],
                       "usage": usage(prompt_tokens, completion, start, first)})
        yield sse("[DONE]")
    finally:
        admission.end()
