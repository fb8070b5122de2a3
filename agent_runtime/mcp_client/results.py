"""An MCP CallToolResult as the ToolResult the model reads: text, structured content, images, errors."""

from __future__ import annotations

import json
from typing import Any

import mcp.types as types

from tools import ToolImage, ToolResult


def tool_result(result: Any) -> ToolResult:
    """Map a CallToolResult; `isError` results stay results (the model reads them as errors)."""
    texts: list[str] = []
    images: list[ToolImage] = []
    for block in getattr(result, "content", None) or []:
        if isinstance(block, types.TextContent):
            texts.append(block.text)
        elif isinstance(block, types.ImageContent):
            images.append(ToolImage(block.mime_type, block.data))
        elif isinstance(block, types.AudioContent):
            texts.append(f"[audio: {block.mime_type}]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            texts.append(text if text is not None else f"[resource {resource.uri}: {resource.mime_type or 'binary'}]")
        elif isinstance(block, types.ResourceLink):
            texts.append(f"[resource link: {block.uri}{' - ' + block.description if block.description else ''}]")
        else:
            texts.append(json.dumps(block.model_dump(mode="json", by_alias=True), ensure_ascii=False))
    structured = getattr(result, "structured_content", None)
    text = "\n".join(texts)
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    return ToolResult(text, is_error=bool(getattr(result, "is_error", False)), structured=structured,
                      images=tuple(images))
