"""Tools the model can call: the Tool interface, ToolRegistry and web search (never imports engine/)."""

from tools.base import Tool, ToolImage, ToolResult, ToolSpec
from tools.registry import ToolRegistry

__all__ = ["Tool", "ToolImage", "ToolResult", "ToolSpec", "ToolRegistry"]
