"""Each format's forcing grammar compiles with llguidance, accepts exactly calls in that format to the
given tools with schema-valid arguments, and what it accepts parses back to those calls."""

from __future__ import annotations

import json
from functools import cache

import llguidance
import llguidance.hf
import pytest

from agent_runtime.tool_parsers import FunctionTool, ToolCall, get_parser
from tests.engine.tiny_models import byte_tokenizer

WEATHER = FunctionTool(
    "get_weather",
    "Current weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
SEARCH = FunctionTool(
    "search",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string"}, "filters": {"$ref": "#/$defs/Filters"}},
        "required": ["query"],
        "additionalProperties": False,
        "$defs": {
            "Filters": {
                "type": "object",
                "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
                "additionalProperties": False,
            }
        },
    },
)
TOOLS = [WEATHER, SEARCH]


def call(name: str, arguments: dict) -> ToolCall:
    return ToolCall("call_1", name, json.dumps(arguments, ensure_ascii=False))


PARIS = call("get_weather", {"city": "Paris", "unit": "celsius"})
QUERY = call("search", {"query": 'say "hi" 東京', "filters": {"tags": ["a"]}})
WRONG_ENUM = call("get_weather", {"city": "Paris", "unit": "kelvin"})
MISSING_REQUIRED = call("get_weather", {"unit": "celsius"})
WRONG_NAME = call("get_wether", {"city": "Paris"})
EXTRA_FIELD = call("search", {"query": "x", "limit": 3})


def objects(calls: list[ToolCall], arguments_key: str) -> str:
    """One JSON call object, or a list of them."""
    written = [f'{{"name": "{c.name}", "{arguments_key}": {c.arguments}}}' for c in calls]
    return written[0] if len(written) == 1 else "[" + ", ".join(written) + "]"


# Per format: the special tokens its tokenizer has, and how its accepted texts are written (render_calls,
# or the grammar's own form where rendering uses another one).
FORMATS = {
    "hermes": (("<tool_call>", "</tool_call>"), None),
    "llama3_json": (("<|python_tag|>",), None),
    "mistral": (("[TOOL_CALLS]",), None),
    "mistral-v11": (
        ("[TOOL_CALLS]", "[ARGS]"),
        lambda calls: "".join(f"[TOOL_CALLS]{c.name}[ARGS]{c.arguments}" for c in calls),
    ),
    "deepseek_v3": (
        (
            "<｜tool▁calls▁begin｜>",
            "<｜tool▁calls▁end｜>",
            "<｜tool▁call▁begin｜>",
            "<｜tool▁call▁end｜>",
            "<｜tool▁sep｜>",
        ),
        None,
    ),
    "deepseek_v3.1": (
        (
            "<｜tool▁calls▁begin｜>",
            "<｜tool▁calls▁end｜>",
            "<｜tool▁call▁begin｜>",
            "<｜tool▁call▁end｜>",
            "<｜tool▁sep｜>",
        ),
        lambda calls: (
            "<｜tool▁calls▁begin｜>"
            + "\n".join(
                f"<｜tool▁call▁begin｜>{c.name}<｜tool▁sep｜>{c.arguments}<｜tool▁call▁end｜>" for c in calls
            )
            + "<｜tool▁calls▁end｜>"
        ),
    ),
    "harmony": (
        ("<|start|>", "<|channel|>", "<|message|>", "<|constrain|>", "<|call|>", "<|end|>"),
        lambda calls: get_parser("harmony").render_calls(calls).removesuffix("<|call|>"),
    ),
    "harmony-no-specials": (
        (),
        lambda calls: get_parser("harmony").render_calls(calls).removesuffix("<|call|>"),
    ),
    "hermes-no-specials": ((), None),
    "gemma": ((), lambda calls: objects(calls, "parameters")),
    "json": ((), None),
}


def parser_of(fmt: str):
    return get_parser(fmt.split("-")[0].removesuffix(".1"))


@cache
def tokenizer(specials: tuple[str, ...]):
    tok = byte_tokenizer()
    if specials:
        tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok, llguidance.hf.from_tokenizer(tok, n_vocab=len(tok))


def special_resolver(tok, specials: tuple[str, ...]):
    ids = {text: tok.convert_tokens_to_ids(text) for text in specials}
    return lambda text: f"<[{ids[text]}]>" if text in ids else None


def text_for(fmt: str, calls: list[ToolCall]) -> str:
    write = FORMATS[fmt][1]
    return write(calls) if write else parser_of(fmt).render_calls(calls)


def accepts(fmt: str, calls: list[ToolCall], *, parallel: bool) -> bool:
    specials = FORMATS[fmt][0]
    tok, ll_tokenizer = tokenizer(specials)
    grammar = parser_of(fmt).grammar(TOOLS, special_resolver(tok, specials), parallel=parallel)
    matcher = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    ids = tok.encode(text_for(fmt, calls), add_special_tokens=False)
    return matcher.consume_tokens(ids) and matcher.is_accepting()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("parallel", [False, True])
def test_grammar_accepts_one_valid_call_to_each_tool(fmt: str, parallel: bool):
    assert accepts(fmt, [PARIS], parallel=parallel)
    assert accepts(fmt, [QUERY], parallel=parallel)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "bad", [WRONG_ENUM, MISSING_REQUIRED, WRONG_NAME, EXTRA_FIELD], ids=lambda c: c.arguments
)
def test_grammar_rejects_calls_that_break_the_schema(fmt: str, bad: ToolCall):
    assert not accepts(fmt, [bad], parallel=True)


@pytest.mark.parametrize("fmt", [fmt for fmt in FORMATS if not fmt.startswith("harmony")])
def test_parallel_grammar_accepts_several_calls_and_single_grammar_only_one(fmt: str):
    assert accepts(fmt, [PARIS, QUERY], parallel=True)
    assert not accepts(fmt, [PARIS, QUERY], parallel=False)


@pytest.mark.parametrize("fmt", [fmt for fmt in FORMATS if "no-specials" not in fmt])
def test_text_a_grammar_accepts_parses_back_to_the_calls(fmt: str):
    calls = [PARIS] if fmt.startswith("harmony") else [PARIS, QUERY]
    message = parser_of(fmt).parse(text_for(fmt, calls))
    assert [(c.name, json.loads(c.arguments)) for c in message.tool_calls] == [
        (c.name, json.loads(c.arguments)) for c in calls
    ]
    assert message.content == ""


def test_grammar_needs_a_tool():
    with pytest.raises(ValueError, match="at least one tool"):
        get_parser("hermes").grammar([], lambda text: None, parallel=False)
