"""Constrained decoding: a request's output held to a JSON schema, regex, choice or Lark grammar.

Backed by llguidance (chosen over xgrammar; see benchmarks/grammar_backends.py): a
`GuidedDecoding` spec travels in SamplingParams, `GrammarCompiler` (one per engine) turns it into a
per-request `TokenMatcher`, and the sampler masks each constrained row's logits with the
matcher's allowed-token bitmask (engine/sampler.py). Masks of a whole batch are computed in
parallel by llguidance's thread pool, outside the GIL; unconstrained rows cost nothing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import llguidance
import llguidance.hf

from engine.errors import InvalidRequestError

GuidedKind = Literal["json_schema", "json_object", "regex", "choice", "lark"]

# Compact JSON with the spacing json.dumps uses. Flexible whitespace lets small models emit
# endless runs of newlines inside a constrained object; a fixed layout cannot loop.
JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class GuidedDecoding:
    """What the output must match. Build with the class methods; `spec` is the source text."""

    kind: GuidedKind
    spec: str = ""

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str) -> GuidedDecoding:
        text = schema if isinstance(schema, str) else json.dumps(schema)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"the JSON schema is not valid JSON: {exc}") from None
        if not isinstance(parsed, (dict, bool)):
            raise InvalidRequestError(f"a JSON schema must be an object or a boolean, not {type(parsed).__name__}")
        return cls("json_schema", text)

    @classmethod
    def json_object(cls) -> GuidedDecoding:
        return cls("json_object")

    @classmethod
    def regex(cls, pattern: str) -> GuidedDecoding:
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Sequence[str]) -> GuidedDecoding:
        if not options or any(not isinstance(o, str) for o in options):
            raise InvalidRequestError("a choice constraint needs a non-empty list of strings")
        return cls("choice", json.dumps(list(options)))

    @classmethod
    def lark(cls, grammar: str) -> GuidedDecoding:
        """An llguidance Lark grammar (llama.cpp GBNF is accepted too and converted)."""
        return cls("lark", grammar)

    def grammar(self) -> str:
        """The llguidance grammar text for this constraint."""
        if self.kind == "json_schema":
            return llguidance.LLMatcher.grammar_from_json_schema(self.spec, defaults=JSON_LAYOUT)
        if self.kind == "json_object":
            return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_LAYOUT)
        if self.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(self.spec)
        if self.kind == "choice":
            options = json.loads(self.spec)
            return llguidance.LLMatcher.grammar_from_regex("|".join(f"(?:{re.escape(o)})" for o in options))
        return llguidance.grammar_from("grammar", self.spec)  # Lark, or llama.cpp GBNF converted to Lark


class TokenMatcher:
    """One request's position in its grammar: which tokens may come next, and whether it is done."""

    def __init__(self, matcher: llguidance.LLMatcher, eos_token_ids: tuple[int, ...]) -> None:
        self.llg = matcher
        self.eos_token_ids = eos_token_ids

    def advance(self, token_id: int) -> bool:
        """Consume a sampled token; False when the grammar rejects it (the matcher is then in error)."""
        return self.llg.consume_token(token_id)

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing more (the request should stop)."""
        return self.llg.is_stopped()

    @property
    def error(self) -> str:
        return self.llg.get_error() if self.llg.is_error() else ""


class GrammarCompiler:
    """Compiles GuidedDecoding specs against one model's tokenizer (thread-safe; built lazily)."""

    def __init__(self, hf_tokenizer, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        self._hf = hf_tokenizer
        self._vocab_size = vocab_size
        self._eos = tuple(eos_token_ids)
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        """The llguidance view of the vocabulary (~0.3 s to build for 50k tokens, so built once)."""
        with self._lock:
            if self._tokenizer is None:
                eos = self._eos[0] if self._eos else None
                try:
                    self._tokenizer = llguidance.hf.from_tokenizer(self._hf, n_vocab=self._vocab_size, eos_token=eos)
                except ValueError as exc:
                    raise InvalidRequestError(f"constrained decoding is not available for this tokenizer: {exc}") \
                        from None
            return self._tokenizer

    def check(self, guided: GuidedDecoding) -> None:
        """Raise InvalidRequestError naming the problem when the constraint does not compile."""
        error = llguidance.LLMatcher.validate_grammar(self._source(guided), self.tokenizer)
        if error:
            raise InvalidRequestError(f"invalid {guided.kind.replace('_', ' ')} constraint: {error.strip()}")

    def matcher(self, guided: GuidedDecoding) -> TokenMatcher:
        """A fresh matcher at the start of the grammar."""
        matcher = llguidance.LLMatcher(self.tokenizer, self._source(guided), log_level=0)
        if matcher.is_error():
            raise InvalidRequestError(
                f"invalid {guided.kind.replace('_', ' ')} constraint: {matcher.get_error().strip()}"
            )
        return TokenMatcher(matcher, self._eos)

    @staticmethod
    def _source(guided: GuidedDecoding) -> str:
        try:
            return guided.grammar()
        except ValueError as exc:
            raise InvalidRequestError(f"invalid {guided.kind.replace('_', ' ')} constraint: {exc}") from None


_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else")


def closed_schema(schema: Any) -> Any:
    """`schema` with additionalProperties: false on every object that lists properties and says
    nothing about extra ones (OpenAI's strict mode; xgrammar's default). A model held to a schema
    otherwise may pad an object with invented keys, which the schema allows."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_schema(s) for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed_schema(s) for name, s in out[key].items()}
    for key in _SUBSCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = closed_schema(out[key])
    open_keys = ("additionalProperties", "patternProperties", "unevaluatedProperties")
    if "properties" in out and not any(k in out for k in open_keys):
        out["additionalProperties"] = False
    return out
