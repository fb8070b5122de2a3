"""Calls written as Python (`get_weather(city="London")`), as Gemma's ```tool_code blocks hold them."""

from __future__ import annotations

import ast
import json
import keyword
import warnings
from typing import Any

from .base import ToolCall


def parse_pythonic_calls(code: str) -> list[tuple[str, str]] | None:
    """[(name, arguments JSON)] for code that is only calls with literal keyword arguments: one call,
    a list or tuple of calls, or one call per line (`print(...)` around a call is unwrapped).
    None for anything else."""
    try:
        with warnings.catch_warnings():  # e.g. "invalid decimal literal" in text that is not code at all
            warnings.simplefilter("ignore", SyntaxWarning)
            module = ast.parse(code.strip())
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    expressions: list[ast.expr] = []
    for statement in module.body:
        if not isinstance(statement, ast.Expr):
            return None
        value = statement.value
        expressions.extend(value.elts if isinstance(value, ast.List | ast.Tuple) else [value])
    calls = [_call(expression) for expression in expressions]
    if not calls or any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


def _call(node: ast.expr) -> tuple[str, str] | None:
    if not isinstance(node, ast.Call):
        return None
    if (
        isinstance(node.func, ast.Name)
        and node.func.id == "print"
        and len(node.args) == 1
        and not node.keywords
    ):
        return _call(node.args[0])
    if isinstance(node.func, ast.Name):
        name = node.func.id
    elif isinstance(node.func, ast.Attribute):  # e.g. default_api.get_weather
        name = node.func.attr
    else:
        return None
    if node.args or any(argument.arg is None for argument in node.keywords):
        return None
    arguments: dict[str, Any] = {}
    for argument in node.keywords:
        try:
            arguments[argument.arg] = ast.literal_eval(argument.value)  # type: ignore[index]
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    try:
        return name, json.dumps(arguments, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):  # sets, bytes, complex numbers, NaN: not JSON
        return None


def render_pythonic_call(call: ToolCall) -> str | None:
    """`name(key=value, ...)`, or None when the call cannot be written as Python (names that are not
    identifiers, arguments that are not an object, hold non-finite numbers or a code fence)."""
    try:
        arguments = json.loads(call.arguments or "{}", parse_constant=_reject)
    except ValueError:
        return None
    if not _identifier(call.name) or not isinstance(arguments, dict) or not all(map(_identifier, arguments)):
        return None
    code = f"{call.name}({', '.join(f'{key}={value!r}' for key, value in arguments.items())})"
    return None if "```" in code else code  # the fence would end inside a string


def _identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _reject(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")
