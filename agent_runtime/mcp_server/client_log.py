"""Log notifications to MCP clients, at the level each client chose with `logging/setLevel`.

MCPServer registers no `logging/setLevel` handler (the capability is deprecated as of 2026-07-28), so
this module adds one: the level is kept per connection, and `ClientLog.send` drops what is below it.
On 2026-07-28 sessions there is no setLevel; the SDK's per-request opt-in (`_meta` log level) decides.
"""

from __future__ import annotations

from typing import Any, get_args

import mcp.types as types
from mcp.server import MCPServer
from mcp.server.connection import allowed_log_levels
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

LEVELS: tuple[str, ...] = get_args(types.LoggingLevel)  # ascending severity (RFC 5424 order)
DEFAULT_LEVEL = "info"  # until the client sets one
_STATE_KEY = "agent_runtime.log_level"
LOGGER_NAME = "agent-runtime"


def install_set_level(server: MCPServer) -> None:
    """Answer `logging/setLevel` (which also makes the server declare the logging capability)."""

    async def set_level(ctx: ServerRequestContext, params: types.SetLevelRequestParams) -> types.EmptyResult:
        _connection_state(ctx)[_STATE_KEY] = params.level
        return types.EmptyResult()

    server._lowlevel_server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)


async def send(ctx: Context, level: types.LoggingLevel, data: Any) -> None:
    """A `notifications/message` on this request's stream, when the client wants this level."""
    request = ctx.request_context
    if level not in allowed_log_levels(request.protocol_version, request.meta):
        return
    if request.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        threshold = _connection_state(request).get(_STATE_KEY, DEFAULT_LEVEL)
        if LEVELS.index(level) < LEVELS.index(threshold):
            return
    notification = types.LoggingMessageNotification(
        params=types.LoggingMessageNotificationParams(level=level, data=data, logger=LOGGER_NAME))
    await request.session.send_notification(notification, related_request_id=request.request_id)


def _connection_state(ctx: ServerRequestContext) -> dict[str, Any]:
    # The SDK's per-connection scratch dict (`Connection.state`); 2.3.0 reaches it only through the session.
    return ctx.session._connection.state
