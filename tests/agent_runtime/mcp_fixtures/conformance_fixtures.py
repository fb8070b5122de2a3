"""The fixtures the official MCP conformance suite's server scenarios call, registered on OUR server.

    server = build_mcp_server(runtime)
    register_fixtures(server)
    app = create_app(runtime, mcp_server=server)

`@modelcontextprotocol/conformance` 0.1.16 expects fixed tool, resource and prompt names (`test_*`,
`test://...`), a completion/complete handler and resources/(un)subscribe handlers. They are registered
here through the public extension point (`build_mcp_server`'s returned MCPServer), never shipped.

Logging: the server as shipped already answers `logging/setLevel` (agent_runtime.mcp_server.client_log),
so no second handler is registered; `test_tool_with_logging` logs through `client_log.send`, the same
path the runtime's own tools use, which honours the level the client set.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import mcp.types as types
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.prompts.base import UserMessage

from agent_runtime.mcp_server import client_log

# a 1x1 transparent PNG and a WAV header with no samples
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5d1b2f30000000049454e44ae426082")
PNG = base64.b64encode(PNG_BYTES).decode()
WAV = base64.b64encode(b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00\x88X\x01\x00"
                       b"\x02\x00\x10\x00data\x00\x00\x00\x00").decode()
WATCHED_URI = "test://watched-resource"

ELICIT_DEFAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {"type": "string", "description": "User status", "enum": ["active", "inactive", "pending"],
                   "default": "active"},
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}


def _choices(*titles: str, prefix: str) -> list[dict[str, str]]:
    return [{"const": f"{prefix}{i}", "title": title} for i, title in enumerate(titles, 1)]


ELICIT_ENUMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "description": "Select one option",
                           "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "description": "Select one titled option",
                         "oneOf": _choices("First Option", "Second Option", "Third Option", prefix="value")},
        "legacyEnum": {"type": "string", "description": "Select one (legacy enumNames)",
                       "enum": ["opt1", "opt2", "opt3"],
                       "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "description": "Select several options", "minItems": 1,
                          "maxItems": 3,
                          "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "description": "Select several titled options", "minItems": 1,
                        "maxItems": 3,
                        "items": {"anyOf": _choices("First Choice", "Second Choice", "Third Choice",
                                                    prefix="value")}},
    },
    "required": [],
}


def _embedded(uri: str = "test://embedded-resource",
              text: str = "This is an embedded resource content.") -> types.EmbeddedResource:
    return types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
        uri=uri, mime_type="text/plain", text=text))


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG, mime_type="image/png")


def register_fixtures(server: MCPServer) -> list[tuple[str, str]]:
    """Register the suite's tools, resources, prompts, completion and subscribe handlers on `server`.

    Returns the log of (un)subscribe requests, `("subscribe", uri)` / `("unsubscribe", uri)`, for tests."""
    _register_tools(server)
    _register_resources(server)
    _register_prompts(server)
    return _register_completion_and_subscriptions(server)


def _register_tools(server: MCPServer) -> None:
    @server.tool(description="Conformance fixture: returns one text block.")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Conformance fixture: returns one PNG image block.")
    def test_image_content() -> list[types.ImageContent]:
        return [_image()]

    @server.tool(description="Conformance fixture: returns one WAV audio block.")
    def test_audio_content() -> list[types.AudioContent]:
        return [types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")]

    @server.tool(description="Conformance fixture: returns an embedded text resource.")
    def test_embedded_resource() -> list[types.EmbeddedResource]:
        return [_embedded()]

    @server.tool(description="Conformance fixture: returns text, an image and an embedded resource.")
    def test_multiple_content_types() -> list[types.ContentBlock]:
        return [types.TextContent(type="text", text="Multiple content types test:"), _image(), _embedded()]

    @server.tool(description="Conformance fixture: sends three log notifications while it runs.")
    async def test_tool_with_logging(ctx: Context) -> str:
        for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            await client_log.send(ctx, "info", message)
            await anyio.sleep(0.05)
        return "Tool with logging executed successfully"

    @server.tool(description="Conformance fixture: reports progress 0, 50, 100 of 100.")
    async def test_tool_with_progress(ctx: Context) -> str:
        for done in (0, 50, 100):
            await ctx.report_progress(done, 100, f"Completed step {done} of 100")
            await anyio.sleep(0.05)
        return "Progress tool executed successfully"

    @server.tool(description="Conformance fixture: always fails (isError result).")
    def test_error_handling() -> str:
        raise RuntimeError("This tool intentionally returns an error for testing")

    @server.tool(description="Conformance fixture: asks the client's LLM (sampling/createMessage).")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        result = await ctx.session.create_message(
            messages=[types.SamplingMessage(role="user",
                                            content=types.TextContent(type="text", text=prompt))],
            max_tokens=100, related_request_id=ctx.request_id)
        return f"LLM response: {getattr(result.content, 'text', result.content)}"

    @server.tool(description="Conformance fixture: asks the user for a username and email (elicitation).")
    async def test_elicitation(message: str, ctx: Context) -> str:
        result = await ctx.session.elicit_form(message, {
            "type": "object",
            "properties": {"username": {"type": "string", "description": "User's response"},
                           "email": {"type": "string", "description": "User's email address"}},
            "required": ["username", "email"]}, related_request_id=ctx.request_id)
        return f"User response: action={result.action}, content={result.content}"

    @server.tool(description="Conformance fixture: elicitation whose fields have defaults (SEP-1034).")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        result = await ctx.session.elicit_form("Please review and update the form fields with defaults",
                                               ELICIT_DEFAULTS_SCHEMA, related_request_id=ctx.request_id)
        return f"Elicitation completed: action={result.action}, content={result.content}"

    @server.tool(description="Conformance fixture: elicitation with the five enum kinds (SEP-1330).")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        result = await ctx.session.elicit_form("Please select options from the enum fields",
                                               ELICIT_ENUMS_SCHEMA, related_request_id=ctx.request_id)
        return f"Elicitation completed: action={result.action}, content={result.content}"


def _register_resources(server: MCPServer) -> None:
    @server.resource("test://static-text", mime_type="text/plain", description="Conformance fixture: text.")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png", description="Conformance fixture: blob.")
    def static_binary() -> bytes:
        return PNG_BYTES

    @server.resource("test://template/{id}/data", mime_type="application/json",
                     description="Conformance fixture: a resource template.")
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource(WATCHED_URI, mime_type="text/plain", description="Conformance fixture: subscribable.")
    def watched() -> str:
        return "Watched resource content"


def _register_prompts(server: MCPServer) -> None:
    @server.prompt(description="Conformance fixture: a prompt without arguments.")
    def test_simple_prompt() -> str:
        return "This is a simple prompt for testing."

    @server.prompt(description="Conformance fixture: a prompt with two required arguments.")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt(description="Conformance fixture: a prompt that embeds the resource it is given.")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803 (wire name)
        return [UserMessage(content=_embedded(resourceUri, "Embedded resource content for testing.")),
                UserMessage("Please process the embedded resource above.")]

    @server.prompt(description="Conformance fixture: a prompt with an image.")
    def test_prompt_with_image() -> list[UserMessage]:
        return [UserMessage(content=_image()), UserMessage("Please analyze the image above.")]


def _register_completion_and_subscriptions(server: MCPServer) -> list[tuple[str, str]]:
    @server.completion()
    async def complete(ref: Any, argument: types.CompletionArgument, context: Any) -> types.Completion:
        if isinstance(ref, types.PromptReference) and ref.name == "test_prompt_with_arguments":
            values = [v for v in ("paris", "park", "party") if v.startswith(argument.value.lower())]
            return types.Completion(values=values, total=len(values), has_more=False)
        return types.Completion(values=[], total=0, has_more=False)

    requests: list[tuple[str, str]] = []

    async def subscribe(ctx: ServerRequestContext, params: types.SubscribeRequestParams) -> types.EmptyResult:
        requests.append(("subscribe", str(params.uri)))
        return types.EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext,
                          params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        requests.append(("unsubscribe", str(params.uri)))
        return types.EmptyResult()

    # MCPServer has no decorator for these; adding the subscribe handler also declares resources.subscribe
    low = server._lowlevel_server
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)
    return requests
