"""Model outputs in each family's real tool-call format, written from the families' chat templates and
published examples, with the message each must parse to; plus malformed outputs per parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recorded:
    parser: str
    label: str
    text: str
    content: str = ""
    reasoning: str = ""
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    in_reasoning: bool = False  # the prompt already opened <think>

    def __str__(self) -> str:
        return f"{self.parser}-{self.label}"


PARIS = ("get_weather", {"city": "Paris"})
TOKYO = ("get_weather", {"city": "Tokyo"})
NESTED_ARGS = {
    "query": 'say "hi" \\ back',
    "filters": {"tags": ["a", "b"], "range": {"from": 1, "to": 2.5}, "exact": True, "none": None},
    "city": "Zürich 東京 🌧",
}
NESTED = ("search", NESTED_ARGS)

# Markup that must never appear in the content of a well-formed output.
MARKERS: dict[str, tuple[str, ...]] = {
    "hermes": ("<tool_call>", "</tool_call>", "<think>", "</think>"),
    "llama3_json": ("<|python_tag|>", '"parameters"', "<think>"),
    "mistral": ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<think>"),
    "deepseek_v3": (
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁calls▁end｜>",
        "</think>",
        "```json",
    ),
    "harmony": (
        "<|channel|>",
        "<|message|>",
        "<|start|>",
        "<|end|>",
        "<|call|>",
        "<|return|>",
        "<|constrain|>",
        "to=functions",
    ),
    "gemma": ("```tool_code", "```json", '"parameters"', "get_weather("),
    "json": ('"arguments"', '"parameters"', "```json"),
}

RECORDED: list[Recorded] = [
    # --- Hermes / Qwen 2.5 / Qwen 3 / SmolLM -------------------------------------------------------
    Recorded(
        "hermes",
        "single",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        calls=(PARIS,),
    ),
    Recorded(
        "hermes",
        "parallel",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>',
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "hermes",
        "content-before",
        "I'll check the weather in Paris for you.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        content="I'll check the weather in Paris for you.",
        calls=(PARIS,),
    ),
    Recorded(
        "hermes",
        "qwen3-thinking",
        "<think>\nThe user wants the weather in Paris. I should call get_weather, not write <tool_call> "
        "in my head.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        reasoning="The user wants the weather in Paris. I should call get_weather, not write <tool_call> "
        "in my head.",
        calls=(PARIS,),
    ),
    Recorded(
        "hermes",
        "qwen3-2507-thinking-opened-in-prompt",
        "Paris weather needed.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        reasoning="Paris weather needed.",
        calls=(PARIS,),
        in_reasoning=True,
    ),
    Recorded(
        "hermes",
        "nested-unicode-escapes",
        '<tool_call>\n{"name": "search", "arguments": {"query": "say \\"hi\\" \\\\ back", "filters": {"tags": '
        '["a", "b"], "range": {"from": 1, "to": 2.5}, "exact": true, "none": null}, "city": "Zürich 東京 🌧"}}'
        "\n</tool_call>",
        calls=(NESTED,),
    ),
    Recorded(
        "hermes",
        "smollm2-list",
        '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_weather", "arguments": {"city": "Tokyo"}}]</tool_call>',
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "hermes",
        "parameters-synonym-and-key-order",
        '<tool_call>\n{"parameters": {"city": "Paris"}, "name": "get_weather"}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "parameters": {"city": "Tokyo"}}\n</tool_call>',
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "hermes",
        "text-after-call",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        "Let me know if you need anything else.",
        content="Let me know if you need anything else.",
        calls=(PARIS,),
    ),
    Recorded(
        "hermes",
        "no-call",
        "The capital of France is Paris. Use <b>bold</b> if you like; 3 < 4.",
        content="The capital of France is Paris. Use <b>bold</b> if you like; 3 < 4.",
    ),
    Recorded(
        "hermes",
        "unclosed-last-block",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
        calls=(PARIS,),
    ),
    # --- Llama 3.1 / 3.2 / 3.3 ----------------------------------------------------------------------
    Recorded(
        "llama3_json", "single", '{"name": "get_weather", "parameters": {"city": "Paris"}}', calls=(PARIS,)
    ),
    Recorded(
        "llama3_json",
        "python-tag",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        calls=(PARIS,),
    ),
    Recorded(
        "llama3_json",
        "llama3.2-typed-parallel",
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Tokyo"}}',
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "llama3_json",
        "arguments-synonym-nested",
        '{"name": "search", "arguments": {"query": "say \\"hi\\" \\\\ back", "filters": {"tags": ["a", "b"], '
        '"range": {"from": 1, "to": 2.5}, "exact": true, "none": null}, "city": "Zürich 東京 🌧"}}',
        calls=(NESTED,),
    ),
    Recorded(
        "llama3_json",
        "content-before-python-tag",
        'Let me look that up.<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        content="Let me look that up.",
        calls=(PARIS,),
    ),
    Recorded(
        "llama3_json",
        "reasoning-then-call",
        '<think>Weather lookup.</think>\n{"name": "get_weather", "parameters": {"city": "Paris"}}',
        reasoning="Weather lookup.",
        calls=(PARIS,),
    ),
    Recorded(
        "llama3_json",
        "plain-json-answer",
        '{"capital": "Paris", "country": "France"}',
        content='{"capital": "Paris", "country": "France"}',
    ),
    Recorded(
        "llama3_json",
        "json-with-name-but-no-parameters",
        '{"name": "Ada Lovelace", "born": 1815}',
        content='{"name": "Ada Lovelace", "born": 1815}',
    ),
    Recorded(
        "llama3_json",
        "no-call",
        "Paris is the capital of France {as you know}.",
        content="Paris is the capital of France {as you know}.",
    ),
    # --- Mistral --------------------------------------------------------------------------------------
    Recorded(
        "mistral",
        "v3-list",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        calls=(PARIS,),
    ),
    Recorded(
        "mistral",
        "v3-parallel-with-ids",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123xyz"}, '
        '{"name": "get_weather", "arguments": {"city": "Tokyo"}, "id": "def456uvw"}]',
        calls=(PARIS, TOKYO),
    ),
    Recorded("mistral", "v11-single", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', calls=(PARIS,)),
    Recorded(
        "mistral",
        "v11-parallel",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather[ARGS]{"city": "Tokyo"}',
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "mistral",
        "v11-call-id",
        '[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{"city": "Paris"}',
        calls=(PARIS,),
    ),
    Recorded(
        "mistral",
        "content-before-v11",
        'Let me check the weather.[TOOL_CALLS]search[ARGS]{"query": "say \\"hi\\" \\\\ back", "filters": '
        '{"tags": ["a", "b"], "range": {"from": 1, "to": 2.5}, "exact": true, "none": null}, '
        '"city": "Zürich 東京 🌧"}',
        content="Let me check the weather.",
        calls=(NESTED,),
    ),
    Recorded(
        "mistral",
        "reasoning-then-call",
        '<think>Need weather.</think>[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
        reasoning="Need weather.",
        calls=(PARIS,),
    ),
    Recorded(
        "mistral",
        "no-call",
        "Paris is the capital of France [citation needed].",
        content="Paris is the capital of France [citation needed].",
    ),
    # --- DeepSeek V3 / R1 / V3.1 ----------------------------------------------------------------------
    Recorded(
        "deepseek_v3",
        "v3-single",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        calls=(PARIS,),
    ),
    Recorded(
        "deepseek_v3",
        "v3-parallel-content-before",
        "Let me check both cities.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>'
        'get_weather\n```json\n{"city": "Tokyo"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        content="Let me check both cities.",
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "deepseek_v3",
        "r1-reasoning-opened-in-prompt",
        "The user asks about Paris weather; I'll call the tool.\n</think>\n\n"
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        reasoning="The user asks about Paris weather; I'll call the tool.",
        calls=(PARIS,),
        in_reasoning=True,
    ),
    Recorded(
        "deepseek_v3",
        "v3.1-parallel",
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>'
        '<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Tokyo"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "deepseek_v3",
        "v3.1-nested",
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>search<｜tool▁sep｜>{"query": "say \\"hi\\" \\\\ back", '
        '"filters": {"tags": ["a", "b"], "range": {"from": 1, "to": 2.5}, "exact": true, "none": null}, '
        '"city": "Zürich 東京 🌧"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        calls=(NESTED,),
    ),
    Recorded(
        "deepseek_v3", "no-call", "Paris is the capital of France.", content="Paris is the capital of France."
    ),
    # --- Harmony (GPT-OSS) ----------------------------------------------------------------------------
    Recorded(
        "harmony",
        "analysis-then-call",
        "<|channel|>analysis<|message|>Need to use function get_weather.<|end|><|start|>assistant"
        '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
        reasoning="Need to use function get_weather.",
        calls=(PARIS,),
    ),
    Recorded(
        "harmony",
        "recipient-in-header",
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}'
        "<|call|>",
        calls=(PARIS,),
    ),
    Recorded(
        "harmony",
        "final-answer",
        '<|channel|>analysis<|message|>User asks: "What is 2 + 2?" Simple arithmetic.<|end|>'
        "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>",
        content="2 + 2 = 4.",
        reasoning='User asks: "What is 2 + 2?" Simple arithmetic.',
    ),
    Recorded(
        "harmony",
        "preamble-then-nested-call",
        "<|channel|>analysis<|message|>Search it.<|end|><|start|>assistant<|channel|>commentary<|message|>"
        "**Action plan**: search first.<|end|><|start|>assistant<|channel|>commentary to=functions.search "
        '<|constrain|>json<|message|>{"query": "say \\"hi\\" \\\\ back", "filters": {"tags": ["a", "b"], '
        '"range": {"from": 1, "to": 2.5}, "exact": true, "none": null}, "city": "Zürich 東京 🌧"}<|call|>',
        content="**Action plan**: search first.",
        reasoning="Search it.",
        calls=(NESTED,),
    ),
    Recorded(
        "harmony",
        "two-calls",
        '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
        '{"city": "Tokyo"}<|call|>',
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "harmony", "no-markup", "Paris is the capital of France.", content="Paris is the capital of France."
    ),
    # --- Gemma 3 --------------------------------------------------------------------------------------
    Recorded("gemma", "tool-code", '```tool_code\nget_weather(city="Paris")\n```', calls=(PARIS,)),
    Recorded(
        "gemma",
        "tool-code-list-content-before",
        'I will check both.\n```tool_code\n[get_weather(city="Paris"), get_weather(city="Tokyo")]\n```',
        content="I will check both.",
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "gemma",
        "tool-code-lines-nested",
        '```tool_code\nget_weather(city="Paris")\nsearch(query=\'say "hi" \\\\ back\', filters={"tags": '
        '["a", "b"], "range": {"from": 1, "to": 2.5}, "exact": True, "none": None}, city="Zürich 東京 🌧")\n```',
        calls=(PARIS, NESTED),
    ),
    Recorded(
        "gemma", "json-bare", '{"name": "get_weather", "parameters": {"city": "Paris"}}', calls=(PARIS,)
    ),
    Recorded(
        "gemma",
        "json-fenced",
        'Sure.\n```json\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```',
        content="Sure.",
        calls=(PARIS,),
    ),
    Recorded(
        "gemma",
        "reasoning-then-tool-code",
        '<think>Weather.</think>\n```tool_code\nget_weather(city="Paris")\n```',
        reasoning="Weather.",
        calls=(PARIS,),
    ),
    Recorded(
        "gemma",
        "no-call-with-code",
        "Here is Python:\n```python\nprint(sorted([3, 1, 2]))\n```",
        content="Here is Python:\n```python\nprint(sorted([3, 1, 2]))\n```",
    ),
    # --- plain JSON (SmolLM3 style) -------------------------------------------------------------------
    Recorded("json", "object", '{"name": "get_weather", "arguments": {"city": "Paris"}}', calls=(PARIS,)),
    Recorded(
        "json",
        "list",
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_weather", "parameters": {"city": "Tokyo"}}]',
        calls=(PARIS, TOKYO),
    ),
    Recorded(
        "json",
        "fenced-nested",
        '```json\n{"name": "search", "arguments": {"query": "say \\"hi\\" \\\\ back", "filters": {"tags": '
        '["a", "b"], "range": {"from": 1, "to": 2.5}, "exact": true, "none": null}, '
        '"city": "Zürich 東京 🌧"}}\n```',
        calls=(NESTED,),
    ),
    Recorded(
        "json",
        "reasoning-then-call",
        '<think>\nCall it.\n</think>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
        reasoning="Call it.",
        calls=(PARIS,),
    ),
    Recorded("json", "no-call", "Paris.", content="Paris."),
]


@dataclass(frozen=True)
class Malformed:
    parser: str
    label: str
    text: str
    content_contains: str  # the malformed markup shows up as content

    def __str__(self) -> str:
        return f"{self.parser}-{self.label}"


MALFORMED: list[Malformed] = [
    Malformed("hermes", "not-json", "<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>"),
    Malformed(
        "hermes", "no-name", '<tool_call>{"arguments": {"a": 1}}</tool_call>', '{"arguments": {"a": 1}}'
    ),
    Malformed("hermes", "unclosed-prefix", "Thinking about <tool_call", "Thinking about <tool_call"),
    Malformed("hermes", "empty-block", "<tool_call></tool_call> done", "<tool_call></tool_call> done"),
    Malformed("hermes", "truncated-header", 'Hi <tool_call>{"name": "get_w', '<tool_call>{"name": "get_w'),
    Malformed("llama3_json", "object-without-name", '{"parameters": {"a": 1}}', '{"parameters": {"a": 1}}'),
    Malformed("llama3_json", "string-parameters", '{"name": "f", "parameters": "x"}', '"parameters": "x"'),
    Malformed(
        "llama3_json",
        "pythonic-builtin",
        '<|python_tag|>brave_search.call(query="x")',
        'brave_search.call(query="x")',
    ),
    Malformed("mistral", "garbage", "[TOOL_CALLS]garbage", "[TOOL_CALLS]garbage"),
    Malformed("mistral", "list-of-numbers", "[TOOL_CALLS][1, 2]", "[TOOL_CALLS][1, 2]"),
    Malformed("mistral", "args-not-object", "[TOOL_CALLS]f[ARGS]oops", "[TOOL_CALLS]f[ARGS]oops"),
    Malformed(
        "deepseek_v3",
        "no-separator",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather {}<｜tool▁call▁end｜>",
        "get_weather",
    ),
    Malformed(
        "deepseek_v3", "bad-args", "<｜tool▁call▁begin｜>f<｜tool▁sep｜>nope<｜tool▁call▁end｜>", "nope"
    ),
    Malformed(
        "harmony", "header-never-ends", "<|channel|>analysis and then nothing", "analysis and then nothing"
    ),
    Malformed(
        "harmony",
        "call-body-not-json",
        "<|channel|>commentary to=functions.f <|constrain|>json<|message|>not json<|call|>",
        "not json",
    ),
    Malformed("gemma", "positional-args", '```tool_code\nget_weather("Paris")\n```', 'get_weather("Paris")'),
    Malformed("gemma", "not-a-call", "```tool_code\nx = 1\n```", "x = 1"),
    Malformed("gemma", "fenced-plain-json", '```json\n{"a": 1}\n```', '{"a": 1}'),
    Malformed("json", "no-name", '{"arguments": {}}', '{"arguments": {}}'),
    Malformed("json", "truncated", '{"name": "f", "argu', '{"name": "f", "argu'),
]
