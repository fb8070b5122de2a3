"""The runtime as an MCP server (`build_mcp_server`), over stdio (`agent-runtime mcp`) or HTTP (/mcp)."""

from agent_runtime.mcp_server.http import MCP_PATH, McpHttpGuard, mcp_endpoint, mcp_http_app
from agent_runtime.mcp_server.server import build_mcp_server

__all__ = ["MCP_PATH", "McpHttpGuard", "build_mcp_server", "mcp_endpoint", "mcp_http_app"]
