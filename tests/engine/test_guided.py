"""Constrained decoding: specs, the batched logits mask, and the embedded model held to grammars."""

from __future__ import annotations

import json
import re

import jsonschema
import llguidance
import pytest
import torch

from engine import InvalidRequestError, SamplingParams
from engine.guided import GrammarCompiler, GuidedDecoding
from engine.sampler import SamplingState, apply_guidance, unpack_bitmask

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "age", "color", "address"],
    "additionalProperties": False,
}


def seeded(n: int, guided: GuidedDecoding, max_tokens: int = 120) -> list[SamplingParams]:
    return [SamplingParams(temperature=0.9, seed=seed, max_tokens=max_tokens, guided=guided) for seed in range(n)]


@pytest.fixture(scope="module")
def compiler(smollm):
    return smollm.core.grammars


@pytest.mark.parametrize(
    ("guided", "message"),
    [
        (GuidedDecoding.regex("[a-z"), "invalid regex constraint"),
        (GuidedDecoding.lark("start: undefined_rule"), "invalid lark constraint"),
        (GuidedDecoding.json_schema({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}),
         "invalid json schema constraint"),
    ],
)
def test_bad_constraints_are_refused_with_the_reason(smollm, guided, message):
    with pytest.raises(InvalidRequestError, match=message):
        smollm.core.validate([1, 2, 3], SamplingParams(guided=guided))
    with pytest.raises(InvalidRequestError, match=message):
        smollm.generate([1, 2, 3], SamplingParams(guided=guided))


def test_schema_that_is_not_json_is_refused():
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        GuidedDecoding.json_schema("{nope")
    with pytest.raises(InvalidRequestError, match="must be an object"):
        GuidedDecoding.json_schema("[1]")
    with pytest.raises(InvalidRequestError, match="non-empty list"):
        GuidedDecoding.choice([])


def test_unpack_bitmask_matches_bit_order():
    mask = torch.tensor([[0b101, -(1 << 31)], [0, 1]], dtype=torch.int32)
    allowed = unpack_bitmask(mask, 64)
    assert allowed[0].nonzero().flatten().tolist() == [0, 2, 63]
    assert allowed[1].nonzero().flatten().tolist() == [32]


def test_mask_touches_only_constrained_rows(compiler, smollm):
    vocab = int(smollm.loaded.config.vocab_size)
    logits = torch.randn(3, vocab)
    eos = smollm.tokenizer.eos_token_ids
    states = [
        SamplingState(SamplingParams(), [1], eos),
        SamplingState(SamplingParams(), [1], eos, matcher=compiler.matcher(GuidedDecoding.choice(["yes", "no"]))),
        SamplingState(SamplingParams(), [1], eos),
    ]
    out = apply_guidance(logits, states, llguidance.LLExecutor())
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    allowed = torch.isfinite(out[1]).nonzero().flatten().tolist()
    texts = {smollm.tokenizer.decode([t]) for t in allowed}
    assert texts and all("yes".startswith(t) or "no".startswith(t) for t in texts), texts


def test_grammar_wins_over_min_tokens(compiler, smollm):
    """A finished grammar only allows EOS; min_tokens suppressing EOS must not leave nothing to pick."""
    vocab = int(smollm.loaded.config.vocab_size)
    matcher = compiler.matcher(GuidedDecoding.choice(["yes"]))
    for token in smollm.tokenizer.encode("yes", add_special_tokens=False):
        assert matcher.advance(token)
    state = SamplingState(SamplingParams(min_tokens=5, max_tokens=9), [1], smollm.tokenizer.eos_token_ids,
                          matcher=matcher)
    logits = torch.randn(1, vocab)
    logits[0, list(smollm.tokenizer.eos_token_ids)] = float("-inf")
    out = apply_guidance(logits, [state])
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [smollm.tokenizer.eos_token_ids[0]]


def test_json_schema_nested_objects_and_enums_validate_20_of_20(smollm):
    prompt = [{"role": "user", "content": "Invent a person and give their details as JSON."}]
    outputs = smollm.chat([prompt] * 20, seeded(20, GuidedDecoding.json_schema(PERSON), max_tokens=160))
    for out in outputs:
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), PERSON)
    assert len({out.text for out in outputs}) > 1  # the seeds really sampled


def test_json_object_gives_an_object(smollm):
    out = smollm.chat([{"role": "user", "content": "Give me a JSON object about cats."}],
                      SamplingParams(temperature=0, max_tokens=60, guided=GuidedDecoding.json_object()))[0]
    if out.finish_reason == "stop":
        assert isinstance(json.loads(out.text), dict)
    else:
        assert out.text.startswith("{")


def test_regex_constrained_answers_match_20_of_20(smollm):
    pattern = r"(Paris|London|Rome|Madrid) has [1-9][0-9]{0,7} people\."
    prompt = [{"role": "user", "content": "Name a European capital and its population."}]
    outputs = smollm.chat([prompt] * 20, seeded(20, GuidedDecoding.regex(pattern), max_tokens=40))
    for out in outputs:
        assert out.finish_reason == "stop"
        assert re.fullmatch(pattern, out.text), out.text


def test_choice_picks_one_option(smollm):
    outputs = smollm.chat([[{"role": "user", "content": "Is the sky blue?"}]] * 4,
                          seeded(4, GuidedDecoding.choice(["yes", "no", "maybe"]), max_tokens=10))
    assert all(out.text in ("yes", "no", "maybe") and out.finish_reason == "stop" for out in outputs)


def test_lark_grammar(smollm):
    grammar = 'start: "The answer is " NUMBER "."\nNUMBER: /[0-9]{1,3}/'
    out = smollm.chat([{"role": "user", "content": "What is 6 times 7?"}],
                      SamplingParams(temperature=0, max_tokens=20, guided=GuidedDecoding.lark(grammar)))[0]
    assert re.fullmatch(r"The answer is [0-9]{1,3}\.", out.text)


def test_constrained_and_free_requests_share_a_batch(smollm):
    """A constrained row must not change what an unconstrained greedy row in the same batch produces."""
    free = SamplingParams(temperature=0, max_tokens=24)
    prompt = [{"role": "user", "content": "Say something about the sea."}]
    alone = smollm.chat(prompt, free)[0].text
    mixed = smollm.chat([prompt, prompt], [free, SamplingParams(temperature=0, max_tokens=24,
                                                                guided=GuidedDecoding.json_object())])
    assert mixed[0].text == alone
    assert mixed[1].text.startswith("{")


def test_compiler_refuses_slow_tokenizers():
    class NotFast:
        pass

    with pytest.raises(InvalidRequestError, match="not available for this tokenizer"):
        _ = GrammarCompiler(NotFast(), 10, [0]).tokenizer
