"""The MCP server's prompt templates: `summarize` and `tool-use`."""

from __future__ import annotations

from typing import Annotated

from mcp.server import MCPServer
from pydantic import Field

_STYLES_HINT = "e.g. 'one sentence', 'three bullet points', 'for a ten-year-old'"


def register_prompts(server: MCPServer) -> None:
    @server.prompt(title="Summarize a text",
                   description="Ask for a summary of a text, optionally in a given style.")
    def summarize(
        text: Annotated[str, Field(description="the text to summarize")],
        style: Annotated[str | None, Field(description=f"how to summarize it ({_STYLES_HINT})")] = None,
    ) -> str:
        how = f" ({style.strip()})" if style and style.strip() else ""
        return f"Summarize the following text{how}. Keep every key fact and add nothing.\n\n{text}"

    @server.prompt(name="tool-use", title="Solve a task with tools",
                   description="Ask to solve a task step by step with the tools this server offers.")
    async def tool_use(task: Annotated[str, Field(description="what to get done")]) -> str:
        tools = await server.list_tools()
        listing = "\n".join(f"- {t.name}: {(t.description or '').splitlines()[0] if t.description else ''}"
                            for t in tools)
        return (f"Solve this task: {task}\n\nYou can call these tools of the agent-runtime server:\n"
                f"{listing}\n\nPlan first, call one tool at a time, read each result before the next call, "
                "and end with a short answer that says which tools you used.")
