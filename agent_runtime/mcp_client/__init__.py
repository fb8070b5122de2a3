"""The MCP client side: a pool of connections to configured servers, their tools in the ToolRegistry."""

from agent_runtime.mcp_client.connection import ServerConnection
from agent_runtime.mcp_client.pool import McpClientPool, McpTool, ServerStatus

__all__ = ["McpClientPool", "McpTool", "ServerConnection", "ServerStatus"]
