"""Pieces of the llguidance Lark grammars that force a tool call: markers, literals, JSON-schema values.

JSON values use `%json {schema}` with fixed whitespace (`", "` and `": "`, as json.dumps writes), so a
forced call cannot wander into endless whitespace and matches what `render_calls` writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from engine.guided import closed_schema

from .base import FunctionTool, SpecialToken

# Fixed whitespace; keywords llguidance does not implement (e.g. some "format"s) are ignored rather
# than failing the whole request.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}
_DEFINITIONS = ("$defs", "definitions")


def literal(text: str) -> str:
    """A Lark string literal matching exactly `text`."""
    return json.dumps(text, ensure_ascii=False)


def marker(special: SpecialToken, text: str) -> str:
    """The one special token spelled `text` when the tokenizer has it, else the text itself."""
    return special(text) or literal(text)


def json_value(schema: dict[str, Any]) -> str:
    """A JSON value matching `schema`, written with fixed whitespace."""
    options = {**schema.get("x-guidance", {}), **_JSON_OPTIONS}
    return "%json " + json.dumps({**schema, "x-guidance": options}, ensure_ascii=False)


def call_object_schema(tool: FunctionTool, arguments_key: str) -> dict[str, Any]:
    """`{"name": <tool name>, "<arguments_key>": <arguments>}`, exactly those keys in that order.

    Objects in the arguments that do not say otherwise get no extra keys (closed_schema): a forced
    call holds to the declared parameters, as OpenAI's strict mode does.
    """
    parameters = {k: v for k, v in closed_schema(tool.parameters).items() if k not in _DEFINITIONS}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": tool.name}, arguments_key: parameters},
        "required": ["name", arguments_key],
        "additionalProperties": False,
    }
    # References like "#/$defs/X" point at the root, which is now this wrapper.
    schema.update({k: closed_schema(tool.parameters[k]) for k in _DEFINITIONS if k in tool.parameters})
    return schema


def alternatives(rule: str, bodies: Sequence[str]) -> list[str]:
    """Lark rules: `rule` is one of `bodies` (one per tool)."""
    if not bodies:
        raise ValueError("a tool-call grammar needs at least one tool")
    names = [f"{rule}_{i}" for i in range(len(bodies))]
    return [f"{rule}: {' | '.join(names)}"] + [
        f"{name}: {body}" for name, body in zip(names, bodies, strict=True)
    ]


def call_objects(rule: str, tools: Sequence[FunctionTool], arguments_key: str) -> list[str]:
    """Lark rules: `rule` is a call object to one of `tools` (see call_object_schema)."""
    return alternatives(rule, [json_value(call_object_schema(tool, arguments_key)) for tool in tools])


def lark(start: str, rules: Sequence[str]) -> str:
    return "\n".join([f"start: {start}", *rules]) + "\n"
