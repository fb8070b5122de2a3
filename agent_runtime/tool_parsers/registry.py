"""Tool parsers by name, and the choice of one for a model from its chat template."""

from __future__ import annotations

from .base import ToolParser
from .deepseek_v3 import DeepSeekV3ToolParser
from .gemma import GemmaToolParser
from .harmony import HarmonyToolParser
from .hermes import HermesToolParser
from .llama3_json import Llama3JsonToolParser
from .mistral import MistralToolParser
from .plain_json import JsonToolParser

_PARSERS: dict[str, ToolParser] = {
    parser.name: parser
    for parser in (
        HermesToolParser(),
        Llama3JsonToolParser(),
        MistralToolParser(),
        DeepSeekV3ToolParser(),
        HarmonyToolParser(),
        GemmaToolParser(),
        JsonToolParser(),
    )
}
DEFAULT_PARSER = "hermes"

# (marker in the chat template, parser): the first match wins, so the more specific come first.
_TEMPLATE_MARKERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("<｜tool▁calls▁begin｜>",), "deepseek_v3"),
    (("[TOOL_CALLS]",), "mistral"),
    (("<|channel|>",), "harmony"),
    (("<|start|>", "<|message|>"), "harmony"),
    (("<tool_call>",), "hermes"),
    (("<|python_tag|>",), "llama3_json"),
    (("Environment: ipython",), "llama3_json"),
)
_GEMMA_MODEL_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text")


def parser_names() -> list[str]:
    return list(_PARSERS)


def get_parser(name: str) -> ToolParser:
    """The parser registered as `name` (ValueError naming the valid ones otherwise)."""
    try:
        return _PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown tool parser {name!r}; valid names: {', '.join(_PARSERS)}") from None


def detect_parser(chat_template: str | None, model_type: str | None) -> ToolParser:
    """The parser for a model: from markers its chat template writes, else its model type, else hermes."""
    template = chat_template or ""
    for markers, name in _TEMPLATE_MARKERS:
        if all(marker in template for marker in markers):
            return _PARSERS[name]
    if model_type and model_type.lower() in _GEMMA_MODEL_TYPES:
        return _PARSERS["gemma"]
    return _PARSERS[DEFAULT_PARSER]
