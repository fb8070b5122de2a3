"""POST /v1/messages: the Anthropic Messages API over the same engines, streamed or whole.

Anthropic clients parse errors as {"type": "error", "error": {type, message}}, so this router's
routes answer every failure (body validation and auth included) in that shape.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import aclosing
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from agent_runtime.openai.errors import ApiError, to_api_error
from agent_runtime.openai.generation import with_keepalive
from agent_runtime.openai.serving import Admission
from agent_runtime.tool_calling import (
    ToolChoice,
    TurnOutput,
    TurnPlan,
    function_tool,
    parse_turn,
    plan_turn,
    render_prompt,
)
from agent_runtime.tool_parsers import FunctionTool, MessageDelta, ParsedMessage, ToolCallDelta, ToolParser
from engine import AsyncEngine, InvalidRequestError, SamplingParams

log = logging.getLogger(__name__)

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}


def anthropic_error(exc: Exception) -> tuple[int, dict, dict]:
    """Status, Anthropic error body and headers for any exception a route raised."""
    if isinstance(exc, RequestValidationError):
        exc = ApiError(400, _validation_message(exc))
    err = to_api_error(exc)
    type_ = _ERROR_TYPES.get(err.status, "api_error")
    body = {"type": "error", "error": {"type": type_, "message": err.message}}
    return err.status, body, err.headers


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return f"invalid JSON body: {first.get('msg', '')}"
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = first.get("msg", "invalid value")
    return f"{param}: {message}" if param else message


class AnthropicRoute(APIRoute):
    """A route whose failures, raised anywhere in its handling, become Anthropic error bodies."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request):
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every failure is answered, in this API's shape
                status, body, headers = anthropic_error(exc)
                if status >= 500:
                    log.exception("POST %s failed", request.url.path)
                return JSONResponse(body, status_code=status, headers=headers)

        return handle


router = APIRouter(route_class=AnthropicRoute)


class _Lenient(BaseModel):
    # Clients send fields we do not use (metadata, thinking, service_tier, ...): accept and ignore them.
    model_config = ConfigDict(extra="allow")


class AnthropicMessage(_Lenient):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class AnthropicTool(_Lenient):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class MessagesRequest(_Lenient):
    model: str
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)  # Anthropic allows 0..1; 0..2 as OpenAI
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[AnthropicTool] | None = None
    tool_choice: dict[str, Any] | None = None
    # Not in Anthropic's API (send it with the SDK's extra_body): reproducible sampling, as in OpenAI's.
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)


def template_messages(body: MessagesRequest) -> list[dict]:
    """Anthropic messages as chat templates expect them.

    The system prompt comes first, tool_use blocks become the assistant's tool_calls and
    tool_result blocks become `tool` messages ahead of the user's text.
    """
    out: list[dict] = []
    if body.system:
        out.append({"role": "system", "content": _text(body.system, "system")})
    tool_names: dict[str, str] = {}
    for i, m in enumerate(body.messages):
        blocks = [{"type": "text", "text": m.content}] if isinstance(m.content, str) else m.content
        texts: list[str] = []
        calls: list[dict] = []
        for j, block in enumerate(blocks):
            kind, where = block.get("type"), f"messages.{i}.content.{j}"
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind in ("thinking", "redacted_thinking"):
                continue  # clients echo earlier turns' thinking back; the template has no place for it
            elif kind == "tool_use" and m.role == "assistant":
                call_id, name = str(block.get("id", "")), str(block.get("name", ""))
                tool_names[call_id] = name
                calls.append({"id": call_id, "type": "function",
                              "function": {"name": name, "arguments": block.get("input") or {}}})
            elif kind == "tool_result" and m.role == "user":
                call_id = str(block.get("tool_use_id", ""))
                result = _text(block.get("content") or "", f"{where}.content")
                if block.get("is_error"):
                    result = f"Error: {result}"  # the template has no error flag: tell the model in words
                tool = {"role": "tool", "tool_call_id": call_id, "content": result}
                if call_id in tool_names:
                    tool["name"] = tool_names[call_id]
                out.append(tool)
            else:
                raise ApiError(400, f"{where}: content block type {kind!r} is not supported in a {m.role} "
                                    "message here; send text, tool_use (assistant) or tool_result (user)")
        if texts or calls or m.role == "assistant":
            message: dict = {"role": m.role, "content": "".join(texts)}
            if calls:
                message["tool_calls"] = calls
            out.append(message)
    return out


def _text(content: str | list, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text":
            raise ApiError(400, f"{where}.{j}: content block type {kind!r} is not supported here; "
                                "send text blocks")
        parts.append(str(block.get("text", "")))
    return "".join(parts)


def template_tools(body: MessagesRequest) -> list[dict] | None:
    """Anthropic tools in the OpenAI function shape that HF chat templates read."""
    if not body.tools or (body.tool_choice or {}).get("type") == "none":
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema}} for t in body.tools]


def anthropic_tools(body: MessagesRequest) -> list[FunctionTool]:
    """The request's custom tools as FunctionTools; server tools (web search, ...) are refused."""
    out: list[FunctionTool] = []
    seen: set[str] = set()
    for i, tool in enumerate(body.tools or ()):
        extra = tool.model_extra or {}
        kind = extra.get("type")
        if kind not in (None, "custom"):
            raise InvalidRequestError(f"tools.{i}: tool type {kind!r} is not supported; only custom tools "
                                      "(name, description, input_schema) are")
        out.append(function_tool(tool.name, tool.description, tool.input_schema, bool(extra.get("strict")),
                                 f"tools.{i}"))
        if tool.name in seen:
            raise InvalidRequestError(f"tools.{i}: the tool name {tool.name!r} is used twice")
        seen.add(tool.name)
    return out


def anthropic_tool_choice(value: dict[str, Any] | None) -> tuple[ToolChoice, bool]:
    """Anthropic's tool_choice (auto / any / tool / none) and whether parallel tool use is allowed."""
    value = value or {"type": "auto"}
    kind = value.get("type")
    parallel = not value.get("disable_parallel_tool_use", False)
    if kind == "auto":
        return ToolChoice("auto"), parallel
    if kind == "any":
        return ToolChoice("required"), parallel
    if kind == "none":
        return ToolChoice("none"), parallel
    if kind == "tool":
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("tool_choice of type 'tool' needs the tool's name")
        return ToolChoice("required", (name,)), parallel
    raise InvalidRequestError(f"tool_choice type {kind!r} is not supported: use auto, any, tool or none")


def messages_plan(body: MessagesRequest, tokenizer, parser: ToolParser) -> TurnPlan:
    choice, parallel = anthropic_tool_choice(body.tool_choice)
    return plan_turn(parser, anthropic_tools(body), choice, tokenizer, parallel=parallel)


def stop_fields(finish_reason: str | None, stop_reason: str | int | None, has_calls: bool = False) -> dict:
    """Anthropic's stop_reason and stop_sequence for how the engine ended a request."""
    if finish_reason == "length":
        return {"stop_reason": "max_tokens", "stop_sequence": None}
    if has_calls and finish_reason == "stop":
        return {"stop_reason": "tool_use", "stop_sequence": None}
    if isinstance(stop_reason, str):
        return {"stop_reason": "stop_sequence", "stop_sequence": stop_reason}
    return {"stop_reason": "end_turn", "stop_sequence": None}


def tool_use_id(call_id: str | None) -> str:
    """Anthropic-style `toolu_` id for a parser's call id (`call_abc` -> `toolu_abc`)."""
    tail = (call_id or "").partition("_")[2] or call_id or uuid.uuid4().hex[:24]
    return "toolu_" + tail


def _tool_input(arguments: str) -> dict | None:
    """A call's arguments as the tool_use block's input; None when they are not a JSON object (cut off)."""
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def content_blocks(parsed: ParsedMessage) -> list[dict]:
    """The message's content: thinking, text, then one tool_use per complete call (at least one block)."""
    blocks: list[dict] = []
    if parsed.reasoning:
        blocks.append({"type": "thinking", "thinking": parsed.reasoning, "signature": ""})
    if parsed.content:
        blocks.append({"type": "text", "text": parsed.content})
    for call in parsed.tool_calls:
        arguments = _tool_input(call.arguments)
        if arguments is not None:  # arguments cut short (max_tokens) are no call to run
            blocks.append({"type": "tool_use", "id": tool_use_id(call.id), "name": call.name, "input": arguments})
    return blocks or [{"type": "text", "text": ""}]


@router.post("/v1/messages")
async def create_message(body: MessagesRequest, request: Request):
    admission = Admission.begin(request, body.model)
    try:
        engine = admission.engine
        plan = messages_plan(body, engine.tokenizer, request.app.state.runtime.tool_parser(admission.model))
        prompt_ids, in_reasoning = render_prompt(engine.tokenizer, template_messages(body), plan)
        params = SamplingParams(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            seed=body.seed,
            max_tokens=body.max_tokens,
            stop=tuple(body.stop_sequences or ()),
            guided=plan.guided,
            skip_special_tokens=plan.skip_special_tokens,
        )
        engine.check(prompt_ids, params)
    except BaseException:
        admission.end()
        raise
    message = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
               "model": admission.model}
    if body.stream:
        keepalive = request.app.state.runtime.settings.keepalive_s
        events = _stream(admission, prompt_ids, params, message, TurnOutput(plan, in_reasoning))
        return StreamingResponse(with_keepalive(events, keepalive), media_type="text/event-stream")
    try:
        text, output_tokens, finish_reason, stop_reason = await _collect(engine, prompt_ids, params)
    finally:
        admission.end()
    parsed = parse_turn(plan, text, in_reasoning)
    content = content_blocks(parsed)
    has_calls = any(block["type"] == "tool_use" for block in content)
    return {**message, "content": content, **stop_fields(finish_reason, stop_reason, has_calls),
            "usage": {"input_tokens": len(prompt_ids), "output_tokens": output_tokens}}


async def _collect(
    engine: AsyncEngine, prompt_ids: list[int], params: SamplingParams
) -> tuple[str, int, str | None, str | int | None]:
    """The whole text, its token count and how the engine ended one request (finish and stop reason)."""
    text, output_tokens, finish_reason, stop_reason = "", 0, None, None
    async with aclosing(engine.generate(prompt_ids, params)) as chunks:
        async for chunk in chunks:
            text += chunk.text
            output_tokens += len(chunk.token_ids)
            if chunk.finish_reason:
                finish_reason, stop_reason = chunk.finish_reason, chunk.stop_reason
    return text, output_tokens, finish_reason, stop_reason


def _event(type_: str, payload: dict) -> str:
    """One Anthropic server-sent event: its type named twice, in the event line and in the data."""
    return f"event: {type_}\ndata: {json.dumps({'type': type_, **payload}, ensure_ascii=False)}\n\n"


class BlockEvents:
    """Message deltas in, Anthropic content block events out: a new block (with the next index) each
    time the kind of output changes (thinking -> text -> tool_use i), the previous one closed first.
    No block is opened for nothing; a message without any gets one empty text block at the end."""

    def __init__(self) -> None:
        self.index = -1
        self._open: tuple[str, int] | None = None  # ("thinking" | "text", 0) or ("tool_use", call index)
        self.has_calls = False

    def feed(self, delta: MessageDelta) -> list[str]:
        # One delta loses the order of its parts; the likely one: reasoning, the rest of the open call,
        # text, new calls.
        events: list[str] = []
        if delta.reasoning:
            events += self._enter(("thinking", 0), {"type": "thinking", "thinking": "", "signature": ""})
            events.append(self._delta({"type": "thinking_delta", "thinking": delta.reasoning}))
        going_on = [c for c in delta.tool_calls if ("tool_use", c.index) == self._open]
        events += self._calls(going_on)
        if delta.content:
            events += self._enter(("text", 0), {"type": "text", "text": ""})
            events.append(self._delta({"type": "text_delta", "text": delta.content}))
        return events + self._calls([c for c in delta.tool_calls if c not in going_on])

    def _calls(self, calls: list[ToolCallDelta]) -> list[str]:
        events: list[str] = []
        for call in calls:
            if self._open != ("tool_use", call.index):
                events += self._enter(("tool_use", call.index), {
                    "type": "tool_use", "id": tool_use_id(call.id), "name": call.name or "", "input": {}})
                self.has_calls = True
            if call.arguments:
                events.append(self._delta({"type": "input_json_delta", "partial_json": call.arguments}))
        return events

    def close(self) -> list[str]:
        """The end of the message: close the open block (opening an empty text block if there was none)."""
        events = self._enter(("text", 0), {"type": "text", "text": ""}) if self.index < 0 else []
        if self._open is not None:
            events.append(_event("content_block_stop", {"index": self.index}))
            self._open = None
        return events

    def _enter(self, key: tuple[str, int], start: dict) -> list[str]:
        if self._open == key:
            return []
        events = [] if self._open is None else [_event("content_block_stop", {"index": self.index})]
        self.index += 1
        self._open = key
        events.append(_event("content_block_start", {"index": self.index, "content_block": start}))
        if self.index == 0:
            events.append(_event("ping", {}))  # where Anthropic's API sends it: after the first block starts
        return events

    def _delta(self, delta: dict) -> str:
        return _event("content_block_delta", {"index": self.index, "delta": delta})


async def _stream(admission: Admission, prompt_ids: list[int], params: SamplingParams, message: dict,
                  output: TurnOutput):
    output_tokens, finish_reason, stop_reason = 0, None, None
    blocks = BlockEvents()
    try:
        yield _event("message_start", {"message": {
            **message, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": len(prompt_ids), "output_tokens": 0}}})
        try:
            # aclosing: when the client goes away, closing this stream aborts the engine request now.
            async with aclosing(admission.engine.generate(prompt_ids, params)) as chunks:
                async for chunk in chunks:
                    output_tokens += len(chunk.token_ids)
                    for event in blocks.feed(output.feed(chunk.text)):
                        yield event
                    if chunk.finish_reason:
                        finish_reason, stop_reason = chunk.finish_reason, chunk.stop_reason
            for event in blocks.feed(output.finish()):
                yield event
        except Exception as exc:  # noqa: BLE001 - reported in-stream: the status line is already sent
            err = to_api_error(exc)
            if err.status >= 500:
                log.exception("streamed message %s failed", message["id"])
            yield _event("error", {"error": {"type": "api_error", "message": err.message}})
            return
        for event in blocks.close():
            yield event
        yield _event("message_delta", {"delta": stop_fields(finish_reason, stop_reason, blocks.has_calls),
                                       "usage": {"output_tokens": output_tokens}})
        yield _event("message_stop", {})
    finally:
        admission.end()
