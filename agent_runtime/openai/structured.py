"""response_format (chat, completions), text.format (responses) and vLLM's guided_* fields -> a constraint."""

from __future__ import annotations

from typing import Any

from agent_runtime.openai.errors import ApiError
from agent_runtime.openai.protocol import SamplingFields
from engine import InvalidRequestError
from engine.guided import GuidedDecoding, closed_schema

_TYPES = "text, json_object, json_schema, regex, lark (or grammar)"


def response_format(value: dict[str, Any] | None, *, flat: bool = False, param: str = "response_format") \
        -> GuidedDecoding | None:
    """The constraint a response format asks for (None for plain text).

    Chat and completions nest the schema (`{"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}`); the Responses API's text.format is flat (`{"type": "json_schema", "name", "schema"}`).
    Extras: `{"type": "regex", "regex": ...}` and `{"type": "lark" | "grammar", "grammar": ...}`.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, f"{param} must be an object with a type ({_TYPES})", param=param)
    kind = value.get("type")
    try:
        if kind == "text":
            return None
        if kind == "json_object":
            return GuidedDecoding.json_object()
        if kind == "json_schema":
            spec = value if flat else value.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if schema is None:
                where = f"{param}.schema" if flat else f"{param}.json_schema.schema"
                raise ApiError(400, f"{where} is required for type json_schema", param=where)
            strict = isinstance(spec, dict) and spec.get("strict") is True
            return GuidedDecoding.json_schema(closed_schema(schema) if strict else schema)
        if kind == "regex":
            return GuidedDecoding.regex(_string(value, ("regex", "pattern"), param))
        if kind in ("lark", "grammar"):
            return GuidedDecoding.lark(_string(value, ("grammar", "lark"), param))
    except InvalidRequestError as exc:
        raise ApiError(400, f"{param}: {exc}", param=param, code="invalid_response_format") from None
    raise ApiError(400, f"{param}.type {kind!r} is not supported; use one of {_TYPES}", param=f"{param}.type")


def guided_fields(body: SamplingFields) -> GuidedDecoding | None:
    """vLLM's per-request extras: guided_json, guided_regex, guided_choice, guided_grammar (at most one)."""
    given = {name: getattr(body, name, None) for name in ("guided_json", "guided_regex", "guided_choice",
                                                          "guided_grammar")}
    given = {name: value for name, value in given.items() if value is not None}
    if not given:
        return None
    if len(given) > 1:
        raise ApiError(400, f"send at most one of {', '.join(sorted(given))}", param=sorted(given)[0])
    name, value = next(iter(given.items()))
    try:
        if name == "guided_json":
            return GuidedDecoding.json_schema(value)
        if name == "guided_regex":
            return GuidedDecoding.regex(value)
        if name == "guided_choice":
            return GuidedDecoding.choice(value)
        return GuidedDecoding.lark(value)
    except InvalidRequestError as exc:
        raise ApiError(400, f"{name}: {exc}", param=name, code="invalid_value") from None


def request_constraint(body: SamplingFields, format_value: dict[str, Any] | None, *, flat: bool = False,
                       param: str = "response_format") -> GuidedDecoding | None:
    """The one constraint of a request: its response format or a guided_* field, not both."""
    from_format = response_format(format_value, flat=flat, param=param)
    from_fields = guided_fields(body)
    if from_format is not None and from_fields is not None:
        raise ApiError(400, f"{param} and the guided_* fields both constrain the output: send one", param=param)
    return from_format or from_fields


def _string(value: dict, keys: tuple[str, ...], param: str) -> str:
    for key in keys:
        text = value.get(key)
        if isinstance(text, str) and text:
            return text
    raise ApiError(400, f"{param}.{keys[0]} must be a non-empty string for type {value.get('type')}",
                   param=f"{param}.{keys[0]}")
