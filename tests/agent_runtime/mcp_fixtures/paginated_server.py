"""A low-level mcp 2.x `Server` (stdio) listing its tools in two pages: `page1_a`, `page1_b`; `page2_c`."""

from __future__ import annotations

import mcp.types as types
from mcp.server.lowlevel import Server

SCHEMA = {"type": "object", "properties": {}}
PAGES = {
    None: (["page1_a", "page1_b"], "page-2"),
    "page-2": (["page2_c"], None),
}


async def list_tools(ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    cursor = params.cursor if params is not None else None
    names, next_cursor = PAGES[cursor]
    tools = [types.Tool(name=n, description=f"tool {n}", input_schema=SCHEMA) for n in names]
    return types.ListToolsResult(tools=tools, next_cursor=next_cursor)


async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"called {params.name}")])


server = Server("paginated", version="0.1.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    import anyio

    anyio.run(main)
