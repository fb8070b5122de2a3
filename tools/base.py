"""The Tool interface: what a tool tells the model (ToolSpec) and what a call gives back (ToolResult)."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool as the model sees it; `name` is unique in its registry."""

    name: str
    description: str
    input_schema: dict[str, Any]
    source: str = "native"  # "native", or "mcp:<server id>"
    original_name: str = ""  # the name at the source (an MCP server's own tool name)

    def openai(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.input_schema}}


@dataclass(frozen=True)
class ToolImage:
    mime_type: str
    data: str  # base64


@dataclass(frozen=True)
class ToolResult:
    """What a call returned. `text` is what the model reads in its tool message; errors are results too."""

    text: str
    is_error: bool = False
    structured: dict[str, Any] | None = None
    images: tuple[ToolImage, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls(message, is_error=True)

    def for_model(self) -> str:
        """The tool message content: the text, errors marked as such, images and structure noted."""
        parts = [f"Error: {self.text}" if self.is_error and not self.text.startswith("Error") else self.text]
        if self.structured is not None and not self.text.strip():
            parts.append(json.dumps(self.structured, ensure_ascii=False))
        for image in self.images:
            parts.append(f"[image: {image.mime_type}, {len(image.data) * 3 // 4} bytes]")
        return "\n".join(p for p in parts if p)


class Tool(ABC):
    """Something the model can call. Implementations never raise for a failed call: they return an error."""

    spec: ToolSpec

    @abstractmethod
    async def call(self, arguments: dict[str, Any]) -> ToolResult: ...
