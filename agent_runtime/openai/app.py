"""create_app: the FastAPI app of the OpenAI routes, the MCP server at /mcp, /health, /metrics and the docs."""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import time

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from mcp.server import MCPServer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_runtime import __version__
from agent_runtime.mcp_server import build_mcp_server, mcp_endpoint
from agent_runtime.openai import chat, completions, embeddings, messages, responses
from agent_runtime.openai.errors import ApiError, error_body, install_handlers
from agent_runtime.openai.metrics import render_metrics
from agent_runtime.runtime import Runtime


def require_api_key(request: Request) -> None:
    """With --api-key, every /v1 route wants `Authorization: Bearer KEY` (or Anthropic's `x-api-key`)."""
    key = request.app.state.runtime.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    offered = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if not hmac.compare_digest(offered.encode(), key.encode()):
        raise ApiError(401, "missing or invalid API key: send Authorization: Bearer <key>",
                       "authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """413 for a request body over `max_bytes`: by its Content-Length, or counted as a chunked body arrives."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse(error_body(f"request body of {length} bytes is over the limit of "
                                               f"{self.max_bytes} bytes", "invalid_request_error",
                                               code="body_too_large"), status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # An HTTPException is what FastAPI lets through from a body read (to errors.http_error).
                raise StarletteHTTPException(413, f"chunked request body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)


def create_app(runtime: Runtime, *, mcp_server: MCPServer | None = None) -> FastAPI:
    """The HTTP app; with settings.mcp_http, the MCP server (`mcp_server`, else built) at /mcp."""
    if mcp_server is None and runtime.settings.mcp_http:
        mcp_server = build_mcp_server(runtime, reexport=runtime.settings.mcp_reexport)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        # The MCP pool lives on the server's event loop: connect at start-up (never blocking it), stop after.
        # The /mcp endpoint is a sub-app whose lifespan Starlette does not run: its sessions run here.
        async with contextlib.AsyncExitStack() as stack:
            if runtime.mcp_pool is not None:
                await runtime.mcp_pool.start()
                stack.push_async_callback(runtime.mcp_pool.stop)
            if mcp_server is not None:
                await stack.enter_async_context(mcp_server.session_manager.run())
            yield

    app = FastAPI(title="agent-runtime", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API of the MCP-native agent runtime")
    app.state.runtime = runtime
    install_handlers(app)
    settings = runtime.settings

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["Mcp-Session-Id"])

    if mcp_server is not None:
        app.router.routes.append(mcp_endpoint(mcp_server, settings))

    v1 = APIRouter(dependencies=[Depends(require_api_key)])
    v1.include_router(chat.router)
    v1.include_router(completions.router)
    v1.include_router(embeddings.router)
    v1.include_router(responses.router)
    v1.include_router(messages.router)

    @v1.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(m) for m in runtime.model_ids()]}

    @v1.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if runtime.embedder and model_id == runtime.embedder.id:
            return _model_card(model_id)
        model, _ = runtime.engine(model_id)
        return _model_card(model)

    @v1.get("/v1/tools")
    async def list_tools():
        """Server-side tools (MCP servers, web search): name, description, input schema, source and state."""
        states = {f"mcp:{s.id}": s.state for s in runtime.mcp_pool.status()} if runtime.mcp_pool else {}
        tools = [{"name": t.name, "description": t.description, "input_schema": t.input_schema, "source": t.source,
                  "original_name": t.original_name, "state": states.get(t.source, "ready")}
                 for t in runtime.registry.specs()]
        servers = [dataclasses.asdict(s) for s in runtime.mcp_pool.status()] if runtime.mcp_pool else []
        return {"object": "list", "data": tools, "servers": servers}

    app.include_router(v1)

    @app.get("/health")
    async def health():
        if not runtime.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return {"status": "ok", "models": list(runtime.engines)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(render_metrics(runtime), media_type="text/plain; version=0.0.4")

    return app


_STARTED = int(time.time())


def _model_card(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": _STARTED, "owned_by": "agent-runtime"}
