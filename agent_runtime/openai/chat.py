"""POST /v1/chat/completions: chat messages through the model's template, streamed or whole."""

from __future__ import annotations

import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from agent_runtime.agent import AgentLoop
from agent_runtime.openai.chat_agent import run_agent, stream_agent
from agent_runtime.openai.chat_format import finish_reason, merge_deltas, openai_delta, openai_message
from agent_runtime.openai.errors import ApiError, error_body, to_api_error
from agent_runtime.openai.generation import (
    chat_logprobs,
    run_choices,
    sampling_params,
    sse,
    stream_choices,
    with_keepalive,
)
from agent_runtime.openai.protocol import ChatCompletionRequest, ChatMessage
from agent_runtime.openai.serving import Admission, usage
from agent_runtime.openai.structured import request_constraint
from agent_runtime.tool_calling import (
    TurnOutput,
    TurnPlan,
    function_tools,
    openai_tool_choice,
    parse_turn,
    plan_turn,
    render_prompt,
)

router = APIRouter()


def template_messages(messages: list[ChatMessage]) -> list[dict]:
    """OpenAI messages as chat templates expect them: text content, `developer` as `system`."""
    out = []
    for i, m in enumerate(messages):
        message: dict = {"role": {"developer": "system", "function": "tool"}.get(m.role, m.role)}
        message["content"] = _text(m.content, i)
        if m.name:
            message["name"] = m.name
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            message["tool_calls"] = [_tool_call(call, i) for call in m.tool_calls]
        out.append(message)
    return out


def _text(content, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        kind = part.get("type")
        if kind not in ("text", "input_text"):
            raise ApiError(400, f"messages[{index}]: content part type {kind!r} is not supported by this model",
                           param=f"messages.{index}.content", code="unsupported_content")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _tool_call(call: dict, index: int) -> dict:
    # Templates index arguments as a mapping; the API carries them as a JSON string.
    function = call.get("function") or {} if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ApiError(400, f"messages[{index}].tool_calls: each call needs a function object with a string name "
                            f"and arguments, not {str(call)[:80]!r}", param=f"messages.{index}.tool_calls",
                       code="invalid_value")
    function = dict(function)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return {**call, "function": function}


def _template_kwargs(body: ChatCompletionRequest) -> dict:
    """chat_template_kwargs plus enable_thinking (the request's own field wins over the kwargs' one)."""
    kwargs = dict(body.chat_template_kwargs or {})
    taken = sorted({"messages", "tools"} & kwargs.keys())
    if taken:
        raise ApiError(400, f"chat_template_kwargs may not set {', '.join(taken)}: send them as request fields",
                       param="chat_template_kwargs", code="invalid_value")
    if body.enable_thinking is not None:
        kwargs["enable_thinking"] = body.enable_thinking
    return kwargs


def chat_plan(body: ChatCompletionRequest, engine, parser) -> TurnPlan:
    """The request's tools, tool_choice, parallel_tool_calls and response format as one plan."""
    tools = function_tools(body.tools)
    choice = openai_tool_choice(body.tool_choice or ("auto" if tools else "none"))
    guided = request_constraint(body, body.response_format)
    return plan_turn(parser, tools, choice, engine.tokenizer, parallel=body.parallel_tool_calls,
                     response_format=guided)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    admission = Admission.begin(request, body.model)
    runtime = request.app.state.runtime
    if len(runtime.registry) and body.server_tools:
        return await _with_server_tools(body, request, admission)
    try:
        engine = admission.engine
        plan = chat_plan(body, engine, runtime.tool_parser(admission.model))
        prompt_ids, in_reasoning = render_prompt(engine.tokenizer, template_messages(body.messages), plan,
                                                 **_template_kwargs(body))
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        params = [sampling_params(body, logprobs, body.max_completion_tokens or body.max_tokens, i,
                                  guided=plan.guided, skip_special_tokens=plan.skip_special_tokens)
                  for i in range(body.n)]
        engine.check(prompt_ids, params[0])
    except BaseException:
        admission.end()
        raise
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": admission.model}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        outputs = [TurnOutput(plan, in_reasoning) for _ in params]
        events = _stream(admission, prompt_ids, params, meta, body.logprobs, include_usage, outputs)
        keepalive = request.app.state.runtime.settings.keepalive_s
        return StreamingResponse(with_keepalive(events, keepalive), media_type="text/event-stream")
    try:
        start = time.perf_counter()
        results = await run_choices(engine, prompt_ids, params)
    finally:
        admission.end()
    choices = []
    for r in results:
        parsed = parse_turn(plan, r.text, in_reasoning)
        choices.append({
            "index": r.index,
            "message": openai_message(parsed),
            "logprobs": chat_logprobs(engine, r.logprobs) if body.logprobs else None,
            "finish_reason": finish_reason(r.finish_reason, bool(parsed.tool_calls)),
        })
    completion = sum(len(r.token_ids) for r in results)
    first = min((r.first_token_at for r in results if r.first_token_at), default=None)
    return {**meta, "object": "chat.completion", "choices": choices,
            "usage": usage(len(prompt_ids), completion, start, first)}


async def _stream(admission: Admission, prompt_ids, params, meta, want_logprobs: bool, include_usage: bool,
                  outputs: list[TurnOutput]):
    engine = admission.engine
    chunk_meta = {**meta, "object": "chat.completion.chunk"}
    start = time.perf_counter()
    first = None
    completion = 0
    try:
        for i in range(len(params)):
            yield sse({**chunk_meta, "choices": [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            ]})
        try:
            async for index, chunk in stream_choices(engine, prompt_ids, params):
                first = first or time.perf_counter()
                completion += len(chunk.token_ids)
                output = outputs[index]
                delta = openai_delta(output.feed(chunk.text))
                if chunk.finish_reason:
                    delta = merge_deltas(delta, openai_delta(output.finish()))
                if not (delta or chunk.finish_reason or (want_logprobs and chunk.logprobs)):
                    continue
                choice = {
                    "index": index,
                    "delta": delta,
                    "logprobs": chat_logprobs(engine, chunk.logprobs or []) if want_logprobs else None,
                    "finish_reason": finish_reason(chunk.finish_reason, output.has_calls),
                }
                yield sse({**chunk_meta, "choices": [choice]})
        except Exception as exc:  # noqa: BLE001 - reported in-stream: the status line is already sent
            err = to_api_error(exc)
            yield sse(error_body(err.message, err.type, err.param, err.code))
        if include_usage:
            yield sse({**chunk_meta, "choices": [], "usage": usage(len(prompt_ids), completion, start, first)})
        yield sse("[DONE]")
    finally:
        admission.end()


async def _with_server_tools(body: ChatCompletionRequest, request: Request, admission: Admission):
    """The agent loop (agent_runtime/agent.py) over the runtime's registered tools and the request's own."""
    runtime = request.app.state.runtime
    try:
        engine = admission.engine
        if body.n != 1:
            raise ApiError(400, "n must be 1 when server-side tools are active (or send server_tools: false)",
                           param="n", code="unsupported_value")
        loop = AgentLoop(engine, runtime.tool_parser(admission.model), _request_registry(runtime, body),
                         max_tool_rounds=body.max_tool_rounds or runtime.settings.max_tool_rounds)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        run_kwargs = dict(
            messages=template_messages(body.messages),
            params=sampling_params(body, logprobs, body.max_completion_tokens or body.max_tokens, 0),
            client_tools=function_tools(body.tools),
            choice=openai_tool_choice(body.tool_choice or "auto"),
            parallel=body.parallel_tool_calls,
            response_format=request_constraint(body, body.response_format),
            template_kwargs=_template_kwargs(body),
        )
    except BaseException:
        admission.end()
        raise
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": admission.model}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = stream_agent(loop, run_kwargs, meta, admission, include_usage)
        return StreamingResponse(with_keepalive(events, runtime.settings.keepalive_s), media_type="text/event-stream")
    return await run_agent(loop, run_kwargs, meta, admission)


def _request_registry(runtime, body: ChatCompletionRequest):
    """The runtime's tools, with the web-search ones held to web_search_options.search_context_size."""
    size = body.web_search_options.search_context_size if body.web_search_options else None
    sized = [tool.with_context_size(size) for tool in (runtime.registry.get(n) for n in runtime.registry.names())
             if size and hasattr(tool, "with_context_size")]
    return runtime.registry.with_replaced(sized) if sized else runtime.registry
