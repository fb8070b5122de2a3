"""Tools the model can call: the Tool interface, ToolRegistry and web search (never imports engine/)."""

from tools.base import Tool, ToolImage, ToolResult, ToolSpec
from tools.registry import ToolRegistry
from tools.web_search import SearchOptions, register_search_tools

__all__ = ["Tool", "ToolImage", "ToolResult", "ToolSpec", "ToolRegistry",
           "SearchOptions", "register_search_tools"]
