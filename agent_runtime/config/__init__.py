"""Runtime configuration read from files: the MCP client config."""

from agent_runtime.config.mcp_config import (
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_TOOL_TIMEOUT_S,
    MCP_CONFIG_ENV,
    McpConfig,
    McpConfigError,
    McpServerConfig,
    Transport,
    load_mcp_config,
    parse_mcp_config,
    resolve_mcp_config_path,
)

__all__ = [
    "DEFAULT_MAX_CONCURRENT_CALLS",
    "DEFAULT_TOOL_TIMEOUT_S",
    "MCP_CONFIG_ENV",
    "McpConfig",
    "McpConfigError",
    "McpServerConfig",
    "Transport",
    "load_mcp_config",
    "parse_mcp_config",
    "resolve_mcp_config_path",
]
