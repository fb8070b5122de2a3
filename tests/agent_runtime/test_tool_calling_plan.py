"""tool_calling.py without a model: tool and tool_choice shapes, plans, prompts, closed schemas."""

from __future__ import annotations

import json

import pytest

from agent_runtime.tool_calling import (
    ToolChoice,
    function_tools,
    inline_tools,
    openai_tool_choice,
    parse_turn,
    plan_turn,
    render_prompt,
)
from agent_runtime.tool_parsers import ToolCall, get_parser
from engine import InvalidRequestError
from engine.guided import GrammarCompiler, closed_schema
from engine.tokenizer import Tokenizer
from tests.engine.tiny_models import byte_tokenizer

NESTED = {
    "type": "object",
    "description": "Book a trip",
    "properties": {
        "city": {"type": "string", "description": "Where to"},
        "class": {"type": "string", "enum": ["economy", "business"]},
        "traveller": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                      "required": ["name"]},
        "stops": {"type": "array", "items": {"type": "object", "properties": {"city": {"type": "string"}}}},
    },
    "required": ["city", "traveller"],
}
TOOLS = [{"type": "function", "function": {"name": "book", "description": "Book a trip", "parameters": NESTED}}]

# A template that renders tools the way Qwen 2.5's does: each tool as JSON.
TOOL_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>{% endif %}"
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
)


@pytest.fixture
def tokenizer():
    hf = byte_tokenizer()
    return Tokenizer(hf, [hf.eos_token_id])


def test_tool_schemas_reach_the_template_intact(tokenizer):
    tokenizer.chat_template = TOOL_TEMPLATE
    plan = plan_turn(get_parser("hermes"), function_tools(TOOLS), ToolChoice(), tokenizer)
    ids, in_reasoning = render_prompt(tokenizer, [{"role": "user", "content": "Go"}], plan)
    text = tokenizer.decode(ids)
    rendered = json.loads(text[len("<tools>"): text.index("\n</tools>")])
    assert rendered == {"type": "function", "function": {"name": "book", "parameters": NESTED,
                                                         "description": "Book a trip"}}
    assert not in_reasoning


def test_templates_without_tools_get_them_inlined(tokenizer):
    plan = plan_turn(get_parser("hermes"), function_tools(TOOLS), ToolChoice(), tokenizer)
    ids, _ = render_prompt(tokenizer, [{"role": "user", "content": "Go"}], plan)
    text = tokenizer.decode(ids)
    assert '"enum": ["economy", "business"]' in text and "<tool_call>" in text


def test_inline_tools_writes_history_in_the_parsers_format():
    parser = get_parser("hermes")
    messages = inline_tools([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "tool", "tool_call_id": "c2", "content": "sunny"},
    ], [], parser)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert parser.parse(messages[1]["content"]).tool_calls[0].name == "w"
    assert messages[2]["content"].count("<tool_response>") == 2


def test_render_prompt_notices_an_open_think_block(tokenizer):
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}<think>\n"
    plan = plan_turn(get_parser("hermes"), [], ToolChoice("none"), tokenizer)
    _, in_reasoning = render_prompt(tokenizer, [{"role": "user", "content": "Q"}], plan)
    assert in_reasoning
    parsed = parse_turn(plan, "hmm, easy</think>\n\nAnswer", in_reasoning)
    assert (parsed.reasoning, parsed.content) == ("hmm, easy", "Answer")


def test_tool_choice_shapes():
    assert openai_tool_choice(None) == ToolChoice("auto")
    assert openai_tool_choice("required") == ToolChoice("required")
    assert openai_tool_choice({"type": "function", "function": {"name": "f"}}) == ToolChoice("required", ("f",))
    assert openai_tool_choice({"type": "function", "name": "f"}, flat=True) == ToolChoice("required", ("f",))
    allowed = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]}}
    assert openai_tool_choice(allowed) == ToolChoice("auto", ("a", "b"))
    flat = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"}]}
    assert openai_tool_choice(flat, flat=True) == ToolChoice("required", ("a",))
    for bad in ("always", {"type": "function"}, {"type": "allowed_tools", "allowed_tools": {"tools": []}}, 3):
        with pytest.raises(InvalidRequestError):
            openai_tool_choice(bad)


def test_plans(tokenizer):
    parser = get_parser("hermes")
    tools = function_tools(TOOLS + [{"type": "function", "function": {"name": "other"}}])
    auto = plan_turn(parser, tools, ToolChoice(), tokenizer)
    assert auto.parse_calls and auto.guided is None and len(auto.tools) == 2
    none = plan_turn(parser, tools, ToolChoice("none"), tokenizer)
    assert not none.parse_calls and none.tools == ()
    forced = plan_turn(parser, tools, ToolChoice("required", ("book",)), tokenizer, parallel=False)
    assert forced.guided is not None and forced.guided.kind == "lark" and [t.name for t in forced.tools] == ["book"]
    with pytest.raises(InvalidRequestError, match="'missing'"):
        plan_turn(parser, tools, ToolChoice("required", ("missing",)), tokenizer)
    with pytest.raises(InvalidRequestError, match="no tools"):
        plan_turn(parser, [], ToolChoice("required"), tokenizer)


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("Paris is sunny today.", True),
        ('<tool_call>\n{"name": "book", "arguments": {"city": "Rome", "traveller": {"name": "Al"}}}\n</tool_call>',
         True),
        ('<tool_call>\n{"name": "book", "arguments": {"city": "Rome"}}\n</tool_call>', False),  # required
        ('<tool_call>\n{"name": "book", "arguments": {"city": "Rome", "traveller": {"name": "Al"}, "x": 1}}'
         "\n</tool_call>", False),  # closed
        ('<tool_call>\n{"name": "other", "arguments": {"anything": [1]}}\n</tool_call>', True),  # not strict
        ("Sure: <tool_call> whatever", False),  # markup only as a call
    ],
)
def test_strict_tools_under_auto_allow_text_or_valid_calls(tokenizer, text, accepted):
    import llguidance

    tools = function_tools([{"type": "function", "function": {"name": "book", "parameters": NESTED, "strict": True}},
                            {"type": "function", "function": {"name": "other"}}])
    plan = plan_turn(get_parser("hermes"), tools, ToolChoice(), tokenizer, parallel=False)
    assert plan.guided is not None
    compiler = GrammarCompiler(tokenizer.hf, len(tokenizer.hf), tokenizer.eos_token_ids)
    matcher = compiler.matcher(plan.guided).llg
    ok = matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False)) and matcher.is_accepting()
    assert ok == accepted, llguidance.LLMatcher.get_error(matcher)


def test_function_tools_validation():
    assert function_tools([{"type": "function", "name": "f", "parameters": NESTED}], flat=True)[0].parameters == NESTED
    assert function_tools([{"type": "function", "function": {"name": "g"}}])[0].parameters["type"] == "object"
    for bad, message in [
        ([{"type": "code_interpreter"}], "only function tools"),
        ([{"type": "function", "function": {"name": "has space"}}], "has space"),
        ([{"type": "function", "function": {"name": "f", "parameters": []}}], "JSON schema object"),
        ([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}],
         "used twice"),
    ]:
        with pytest.raises(InvalidRequestError, match=message):
            function_tools(bad)


def test_parallel_off_keeps_the_first_call(tokenizer):
    parser = get_parser("hermes")
    plan = plan_turn(parser, function_tools(TOOLS), ToolChoice(), tokenizer, parallel=False)
    text = parser.render_calls([ToolCall("a", "book", '{"city": "A"}'), ToolCall("b", "book", '{"city": "B"}')])
    calls = parse_turn(plan, text, False).tool_calls
    assert [json.loads(c.arguments)["city"] for c in calls] == ["A"]


def test_closed_schema_closes_objects_that_say_nothing_about_extra_keys():
    closed = closed_schema(NESTED)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["traveller"]["additionalProperties"] is False
    assert closed["properties"]["stops"]["items"]["additionalProperties"] is False
    assert NESTED.get("additionalProperties") is None  # the input is not modified
    open_map = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "integer"}}
    assert closed_schema(open_map) == open_map
    assert closed_schema({"type": "string"}) == {"type": "string"}


def test_harmony_channels_are_read_without_tools_too(tokenizer):
    plan = plan_turn(get_parser("harmony"), [], ToolChoice("none"), tokenizer)
    assert not plan.skip_special_tokens  # the channel markers must survive decoding
    text = ("<|channel|>analysis<|message|>Think.<|end|><|start|>assistant"
            "<|channel|>final<|message|>Answer.")
    parsed = parse_turn(plan, text, False)
    assert (parsed.reasoning, parsed.content, parsed.tool_calls) == ("Think.", "Answer.", ())
