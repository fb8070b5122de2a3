"""build_mcp_server: the runtime as an MCP server (tools, resources, prompts, logging) on the official SDK.

The same `MCPServer` serves every transport: stdio (`agent-runtime mcp`) and streamable HTTP at `/mcp`
(`agent-runtime serve`, see http.py). With `reexport`, every tool of the runtime's ToolRegistry (the MCP
servers of --mcp-config, web search) is offered too, under its registered name, so the runtime is an
aggregating gateway; the registry is read at each tools/list, so servers that connect later show up.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent
from mcp.types import Tool as McpToolInfo

from agent_runtime import __version__
from agent_runtime.mcp_server import client_log
from agent_runtime.mcp_server.embed_tool import register_embed
from agent_runtime.mcp_server.generation_tools import register_generation
from agent_runtime.mcp_server.models import register_models
from agent_runtime.mcp_server.prompts import register_prompts
from agent_runtime.runtime import Runtime
from tools import ToolResult

WEB_SEARCH_SOURCE = "web_search"  # tools/web_search registers its tools under this source

INSTRUCTIONS = """\
agent-runtime serves local language models. Tools: `chat` (a conversation or one prompt; use_tools lets \
the model call this server's registered tools in an agent loop), `complete` (continue raw text), `embed` \
(text to vectors), `list_models` (the served models; the first is the default). Generation streams its text \
as progress notifications. Resources `model://{id}` describe each model (config, context length, chat \
template). Prompts: `summarize`, `tool-use`."""


class RuntimeMcpServer(MCPServer):
    """An MCPServer whose tool list can include the runtime's registry tools (re-exported)."""

    def __init__(self, runtime: Runtime, *, reexport: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.reexport = reexport

    def _offered(self, source: str) -> bool:
        """Registry tools offered here: all of them with reexport; the web-search tools whenever search is on."""
        return self.reexport or source == WEB_SEARCH_SOURCE

    async def list_tools(self) -> list[McpToolInfo]:
        tools = await super().list_tools()
        own = {t.name for t in tools}  # a native tool wins a name clash
        tools += [McpToolInfo(name=spec.name, description=spec.description or spec.original_name,
                              input_schema=spec.input_schema, _meta={"agent-runtime/source": spec.source})
                  for spec in self.runtime.registry.specs() if spec.name not in own and self._offered(spec.source)]
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        tool = self.runtime.registry.get(name)
        if tool is not None and self._offered(tool.spec.source) and name not in await self._native_names():
            return _call_result(await self.runtime.registry.call(name, arguments))
        return await super().call_tool(name, arguments, context)

    async def _native_names(self) -> set[str]:
        return {t.name for t in await super().list_tools()}


def build_mcp_server(runtime: Runtime, *, reexport: bool = False) -> MCPServer:
    """The runtime's MCP server. Tests may register more tools/resources/prompts on the returned server
    (it is a plain MCPServer) before serving it (`create_app(runtime, mcp_server=...)`)."""
    server = RuntimeMcpServer(runtime, reexport=reexport, name="agent-runtime", version=__version__,
                              instructions=INSTRUCTIONS)
    register_generation(server, runtime)
    register_embed(server, runtime)
    register_models(server, runtime)
    register_prompts(server)
    client_log.install_set_level(server)
    return server


def _call_result(result: ToolResult) -> CallToolResult:
    """A registry tool's result as MCP content: text, images, structured content and the error flag."""
    content: list[ContentBlock] = [TextContent(type="text", text=result.text)] if result.text else []
    content += [ImageContent(type="image", data=i.data, mime_type=i.mime_type) for i in result.images]
    return CallToolResult(content=content, structured_content=result.structured, is_error=result.is_error)
