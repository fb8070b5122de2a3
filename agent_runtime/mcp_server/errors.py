"""The one mapping from runtime exceptions to MCP tool errors (an `isError` result the client reads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver.exceptions import ToolError

from agent_runtime.runtime import UnknownModelError
from engine.errors import EngineError


@contextmanager
def tool_errors() -> Iterator[None]:
    """Bad requests (unknown model, bad sampling values, a prompt over the context window, a failed
    template) become ToolErrors with their message; anything else is left to the SDK (logged, isError)."""
    try:
        yield
    except (EngineError, ValueError, UnknownModelError) as exc:
        raise ToolError(str(exc)) from exc
