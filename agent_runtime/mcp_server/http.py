"""The MCP server over streamable HTTP at exactly `/mcp`: on the OpenAI app, or on a port of its own.

In front of the SDK's endpoint sits `McpHttpGuard`: the Host header must name a loopback address when the
server binds one, a browser's Origin must be a loopback origin or a --cors-origin (DNS-rebinding and
cross-site protection), and with an MCP key (--mcp-api-key, default --api-key) `Authorization: Bearer KEY`
is required. Starlette does not run a sub-app's lifespan, so whoever serves the endpoint runs
`server.session_manager.run()` (create_app's lifespan, or `mcp_http_app`'s).
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import urlsplit

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_runtime.runtime import ServerSettings

MCP_PATH = "/mcp"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class McpHttpGuard:
    """ASGI wrapper: Host and Origin checks (421 / 403), then the bearer token (401), then the endpoint."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.origins = frozenset(settings.cors_origins)
        self.check_host = settings.host in LOOPBACK_HOSTS  # a public bind is reached by names we cannot know
        key = settings.mcp_api_key if settings.mcp_api_key is not None else settings.api_key
        self.key = key or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        origin = headers.get("origin")
        if self.check_host and _hostname(f"//{host}") not in LOOPBACK_HOSTS:
            return await _refuse(421, f"Host {host!r} is not allowed: this server answers loopback names "
                                      "only", scope, receive, send)
        if origin is not None and not self.origin_allowed(origin):
            return await _refuse(403, f"Origin {origin!r} is not allowed; start the server with "
                                      f"--cors-origin {origin} to allow it", scope, receive, send)
        if self.key is not None and not self.authorized(headers.get("authorization", "")):
            return await _refuse(401, "missing or invalid token: send Authorization: Bearer <key>", scope,
                                 receive, send, {"WWW-Authenticate": 'Bearer realm="agent-runtime MCP"'})
        await self.app(scope, receive, send)

    def origin_allowed(self, origin: str) -> bool:
        if origin in self.origins or "*" in self.origins:
            return True
        return urlsplit(origin).scheme in ("http", "https") and _hostname(origin) in LOOPBACK_HOSTS

    def authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key.encode())


def mcp_endpoint(server: MCPServer, settings: ServerSettings) -> Route:
    """The `/mcp` route (any method) of `server`, guarded; creates the server's session manager."""
    # Host/Origin are the guard's job (it knows the bind address and --cors-origin), so the SDK's own
    # check, which would allow loopback names only, is off.
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return Route(MCP_PATH, endpoint=McpHttpGuard(app, settings), include_in_schema=False)


def mcp_http_app(server: MCPServer, settings: ServerSettings) -> Starlette:
    """A Starlette app serving only `/mcp` (for `serve --mcp-port`), running the session manager."""
    route = mcp_endpoint(server, settings)
    return Starlette(routes=[route], lifespan=lambda _app: server.session_manager.run())


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # a malformed port or IPv6 literal
        return None


async def _refuse(status: int, message: str, scope: Scope, receive: Receive, send: Send,
                  headers: dict[str, str] | None = None) -> None:
    code = -32001 if status == 401 else -32600
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    response = Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)
    await response(scope, receive, send)
