"""Parsers by name, and the choice of parser from a chat template / model type."""

from __future__ import annotations

import pytest

from agent_runtime.tool_parsers import DEFAULT_PARSER, ToolParser, detect_parser, get_parser, parser_names


def test_every_registered_name_gives_its_parser():
    assert set(parser_names()) == {
        "hermes",
        "llama3_json",
        "mistral",
        "deepseek_v3",
        "harmony",
        "gemma",
        "json",
    }
    for name in parser_names():
        parser = get_parser(name)
        assert isinstance(parser, ToolParser) and parser.name == name


def test_unknown_name_is_a_value_error_listing_the_valid_names():
    with pytest.raises(ValueError, match="unknown tool parser 'qwen'.*hermes.*llama3_json.*mistral"):
        get_parser("qwen")


def test_formats_with_special_token_markers_keep_special_tokens_in_the_text():
    keep = {name for name in parser_names() if not get_parser(name).skip_special_tokens}
    assert keep == {"llama3_json", "mistral", "deepseek_v3", "harmony"}


# Excerpts of the families' chat templates (enough to carry the markers the detection reads).
TEMPLATES = [
    (
        "{%- if tools %}<tools>{{ tool | tojson }}</tools>For each function call, return a json object with function "
        "name and arguments within <tool_call></tool_call> XML tags{%- endif %}<|im_start|>",
        None,
        "hermes",
    ),
    (
        "{%- if message.tool_calls %}{{- '[TOOL_CALLS][' }}{%- for tool_call in message.tool_calls %}",
        None,
        "mistral",
    ),
    (
        "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>'}}",
        None,
        "deepseek_v3",
    ),
    (
        "{{- '<|start|>assistant<|channel|>analysis<|message|>' + message.thinking + '<|end|>' }}",
        None,
        "harmony",
    ),
    ("{{- '<|start|>' + message.role + '<|message|>' + message.content + '<|end|>' }}", None, "harmony"),
    ('{{- "Environment: ipython\\n" }}{{- "<|eot_id|>" }}', None, "llama3_json"),
    ("{{- '<|python_tag|>' + tool_call.name + '.call(' }}<|start_header_id|>", None, "llama3_json"),
    ("{{ bos_token }}{%- for message in messages %}<start_of_turn>", "gemma3", "gemma"),
    ("{{ bos_token }}<start_of_turn>", "gemma3_text", "gemma"),
    ("<|im_start|>{{ message.content }}<|im_end|>", "llama", DEFAULT_PARSER),
    (None, None, DEFAULT_PARSER),
]


@pytest.mark.parametrize(("template", "model_type", "expected"), TEMPLATES)
def test_detect_parser_reads_template_markers_then_model_type(template, model_type, expected):
    assert detect_parser(template, model_type).name == expected
