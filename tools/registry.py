"""ToolRegistry: native tools and MCP tools behind one name space, called with a timeout, never raising."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from tools.base import Tool, ToolResult, ToolSpec

log = logging.getLogger(__name__)


class ToolRegistry:
    """The tools the model may call, by name. Sources (an MCP server, web search) replace their whole set
    at once, so a server's refreshed list never leaves half its old tools behind."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._by_source: dict[str, list[str]] = {}

    def register(self, tool: Tool) -> None:
        name = tool.spec.name
        if name in self._tools:
            raise ValueError(f"a tool named {name!r} is already registered (from {self._tools[name].spec.source})")
        self._tools[name] = tool
        self._by_source.setdefault(tool.spec.source, []).append(name)

    def replace_source(self, source: str, tools: Iterable[Tool]) -> None:
        """Make `tools` the whole set registered for `source` (an empty list removes it)."""
        for name in self._by_source.pop(source, []):
            self._tools.pop(name, None)
        for tool in tools:
            self.register(tool)

    def with_replaced(self, tools: Iterable[Tool]) -> ToolRegistry:
        """A copy for one request in which `tools` stand in for the registered tools of the same names."""
        replacing = {t.spec.name: t for t in tools}
        copy = ToolRegistry()
        for name, tool in self._tools.items():
            copy.register(replacing.get(name, tool))
        return copy

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    async def call(self, name: str, arguments: dict[str, Any] | str, timeout_s: float | None = None) -> ToolResult:
        """Run one call; an unknown tool, bad arguments, a failure or a timeout come back as error results."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult.error(f"unknown tool {name!r}; available: {', '.join(self._tools) or 'none'}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return ToolResult.error(f"the arguments of {name} are not valid JSON: {exc}")
        if not isinstance(arguments, dict):
            return ToolResult.error(f"the arguments of {name} must be a JSON object, not {type(arguments).__name__}")
        try:
            if timeout_s is None:
                return await tool.call(arguments)
            return await asyncio.wait_for(tool.call(arguments), timeout_s)
        except TimeoutError:
            return ToolResult.error(f"{name} did not answer within {timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - a tool's failure is a result the model reads
            log.warning("tool %s failed: %r", name, exc)
            return ToolResult.error(f"{name} failed: {exc}")
