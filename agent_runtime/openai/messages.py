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
from engine import AsyncEngine, SamplingParams

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


def stop_fields(finish_reason: str | None, stop_reason: str | int | None) -> dict:
    """Anthropic's stop_reason and stop_sequence for how the engine ended a request."""
    if finish_reason == "length":
        return {"stop_reason": "max_tokens", "stop_sequence": None}
    if isinstance(stop_reason, str):
        return {"stop_reason": "stop_sequence", "stop_sequence": stop_reason}
    return {"stop_reason": "end_turn", "stop_sequence": None}


@router.post("/v1/messages")
async def create_message(body: MessagesRequest, request: Request):
    admission = Admission.begin(request, body.model)
    try:
        engine = admission.engine
        prompt_ids = engine.tokenizer.encode_chat(template_messages(body), template_tools(body))
        params = SamplingParams(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            max_tokens=body.max_tokens,
            stop=tuple(body.stop_sequences or ()),
        )
        engine.check(prompt_ids, params)
    except BaseException:
        admission.end()
        raise
    message = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
               "model": admission.model}
    if body.stream:
        keepalive = request.app.state.runtime.settings.keepalive_s
        return StreamingResponse(with_keepalive(_stream(admission, prompt_ids, params, message), keepalive),
                                 media_type="text/event-stream")
    try:
        text, output_tokens, finish = await _collect(engine, prompt_ids, params)
    finally:
        admission.end()
    return {**message, "content": [{"type": "text", "text": text}], **finish,
            "usage": {"input_tokens": len(prompt_ids), "output_tokens": output_tokens}}


async def _collect(
    engine: AsyncEngine, prompt_ids: list[int], params: SamplingParams
) -> tuple[str, int, dict]:
    """The whole text, its token count and the stop fields of one request."""
    text, output_tokens, finish = "", 0, stop_fields(None, None)
    async with aclosing(engine.generate(prompt_ids, params)) as chunks:
        async for chunk in chunks:
            text += chunk.text
            output_tokens += len(chunk.token_ids)
            if chunk.finish_reason:
                finish = stop_fields(chunk.finish_reason, chunk.stop_reason)
    return text, output_tokens, finish


def _event(type_: str, payload: dict) -> str:
    """One Anthropic server-sent event: its type named twice, in the event line and in the data."""
    return f"event: {type_}\ndata: {json.dumps({'type': type_, **payload}, ensure_ascii=False)}\n\n"


async def _stream(admission: Admission, prompt_ids: list[int], params: SamplingParams, message: dict):
    output_tokens, finish = 0, stop_fields(None, None)
    try:
        yield _event("message_start", {"message": {
            **message, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": len(prompt_ids), "output_tokens": 0}}})
        yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        yield _event("ping", {})
        try:
            # aclosing: when the client goes away, closing this stream aborts the engine request now.
            async with aclosing(admission.engine.generate(prompt_ids, params)) as chunks:
                async for chunk in chunks:
                    output_tokens += len(chunk.token_ids)
                    if chunk.text:
                        yield _event("content_block_delta",
                                     {"index": 0, "delta": {"type": "text_delta", "text": chunk.text}})
                    if chunk.finish_reason:
                        finish = stop_fields(chunk.finish_reason, chunk.stop_reason)
        except Exception as exc:  # noqa: BLE001 - reported in-stream: the status line is already sent
            err = to_api_error(exc)
            if err.status >= 500:
                log.exception("streamed message %s failed", message["id"])
            yield _event("error", {"error": {"type": "api_error", "message": err.message}})
            return
        yield _event("content_block_stop", {"index": 0})
        yield _event("message_delta", {"delta": finish, "usage": {"output_tokens": output_tokens}})
        yield _event("message_stop", {})
    finally:
        admission.end()
