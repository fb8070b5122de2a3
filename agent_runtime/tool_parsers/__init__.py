"""Tool-call parsers: one stateless parser per model family's output format (see base.py)."""

from .base import (
    FunctionTool,
    MessageDelta,
    ParsedMessage,
    ParserStream,
    SpecialToken,
    ToolCall,
    ToolCallDelta,
    ToolParser,
    alphanumeric_id,
    collect,
)
from .markup_stream import reasoning_stream
from .registry import DEFAULT_PARSER, detect_parser, get_parser, parser_names

__all__ = [
    "DEFAULT_PARSER",
    "FunctionTool",
    "MessageDelta",
    "ParsedMessage",
    "ParserStream",
    "SpecialToken",
    "ToolCall",
    "ToolCallDelta",
    "ToolParser",
    "alphanumeric_id",
    "collect",
    "detect_parser",
    "get_parser",
    "parser_names",
    "reasoning_stream",
]
