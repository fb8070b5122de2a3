"""agent_runtime: the CLI, servers, MCP client pool and agent loop on top of the engine."""

__version__ = "0.1.0"
