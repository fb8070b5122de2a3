"""Evidence for choosing a constrained-decoding backend: llguidance vs xgrammar, on the embedded model's tokenizer.

For each backend: tokenizer setup time; JSON-schema feature coverage (does the schema compile, is a valid
instance accepted and an invalid one rejected, token by token, with strict options: llguidance
lenient=False, xgrammar strict_mode=True); per-token next-token-bitmask time while walking a valid instance
of three schemas (single matcher, then 8 matchers batched); and a one-line verdict.

    pip install xgrammar            # (--no-deps plus apache-tvm-ffi avoids pulling triton)
    python benchmarks/grammar_backends.py

Coverage legend: ok = valid accepted and invalid rejected; ignored = compiles but the invalid instance is
accepted (keyword not enforced); bad = the valid instance is rejected; err = does not compile.
Compile time is schema -> grammar (llguidance: + validation; it builds lexer/parser state lazily, which the
"1st mask" column shows); xgrammar's compiler cache is off so each schema is compiled from scratch.
"""

from __future__ import annotations

import importlib.metadata
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch as lltorch
import xgrammar as xg

from engine.loader.gguf_checkpoint import GgufCheckpoint
from engine.loader.source import resolve_model

Schema = dict[str, Any]
REPS = 5
BATCH = 8


def obj(prop: Schema) -> Schema:  # {"v": prop}, closed
    return {"type": "object", "properties": {"v": prop}, "required": ["v"], "additionalProperties": False}


NODE = {"type": "object", "properties": {"v": {"type": "integer"}, "children": {"type": "array", "items": {
    "$ref": "#/$defs/node"}}}, "required": ["v"], "additionalProperties": False}
PT = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": False}
KIND = {"kind": {"enum": ["a", "b"]}, "n": {}}
# (feature, schema, valid instance, invalid instance)
CASES: list[tuple[str, Schema, Any, Any]] = [
    ("$ref/$defs", {"$defs": {"pt": PT}, **obj({"$ref": "#/$defs/pt"})}, {"v": {"x": 1}}, {"v": {"x": "a"}}),
    ("anyOf", obj({"anyOf": [{"type": "integer"}, {"type": "string"}]}), {"v": "hi"}, {"v": True}),
    ("oneOf", obj({"oneOf": [{"type": "integer"}, {"type": "string"}]}), {"v": 3}, {"v": [1]}),
    ("allOf", {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                         {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
     {"a": 1, "b": "x"}, {"a": 1}),
    ("enum", obj({"enum": ["red", "green", 3]}), {"v": "green"}, {"v": "blue"}),
    ("const", obj({"const": "fixed"}), {"v": "fixed"}, {"v": "other"}),
    ("nested objects", obj(obj(obj({"type": "boolean"}))), {"v": {"v": {"v": True}}}, {"v": {"v": {"v": 1}}}),
    ("array min/maxItems", obj({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}),
     {"v": [1, 2]}, {"v": [1, 2, 3, 4]}),
    ("string min/maxLength", obj({"type": "string", "minLength": 2, "maxLength": 4}), {"v": "abc"},
     {"v": "abcdef"}),
    ("pattern", obj({"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}), {"v": "ABC-12"}, {"v": "abc-12"}),
    ("format date-time", obj({"type": "string", "format": "date-time"}), {"v": "2024-01-02T03:04:05Z"},
     {"v": "yesterday"}),
    ("format email", obj({"type": "string", "format": "email"}), {"v": "a@b.com"}, {"v": "not-an-email"}),
    ("format uuid", obj({"type": "string", "format": "uuid"}), {"v": "123e4567-e89b-12d3-a456-426614174000"},
     {"v": "1234"}),
    ("integer min/max", obj({"type": "integer", "minimum": 1, "maximum": 10}), {"v": 7}, {"v": 11}),
    ("number exclusiveMinimum", obj({"type": "number", "exclusiveMinimum": 0}), {"v": 0.5}, {"v": 0}),
    ("additionalProperties: schema", {"type": "object", "additionalProperties": {"type": "integer"}},
     {"a": 1, "b": 2}, {"a": "x"}),
    ("patternProperties", {"type": "object", "patternProperties": {"^x_": {"type": "integer"}},
                           "additionalProperties": False}, {"x_a": 1}, {"x_a": "s"}),
    ("required", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                  "required": ["a", "b"]}, {"a": 1, "b": 2}, {"a": 1}),
    ("nullable [string,null]", obj({"type": ["string", "null"]}), {"v": None}, {"v": 1}),
    ("if/then/else", {"type": "object", "properties": KIND, "required": ["kind", "n"], "additionalProperties": False,
                      "if": {"properties": {"kind": {"const": "a"}}}, "then": {"properties": {"n": {"type": "integer"}}},
                      "else": {"properties": {"n": {"type": "string"}}}}, {"kind": "a", "n": 1}, {"kind": "a", "n": "x"}),
    ("uniqueItems", obj({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}), {"v": [1, 2]},
     {"v": [1, 1]}),
    ("prefixItems", obj({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False}),
     {"v": [1, "a"]}, {"v": ["a", 1]}),
    ("recursive schema", {"$defs": {"node": NODE}, "$ref": "#/$defs/node"}, {"v": 1, "children": [{"v": 2}]},
     {"v": 1, "children": [{"v": "x"}]}),
]

FLAT: Schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                "ok": {"type": "boolean"}}, "required": ["name", "age", "ok"], "additionalProperties": False}
NESTED: Schema = {"type": "object", "additionalProperties": False, "required": ["user", "tags", "items"], "properties": {
    "user": {"type": "object", "additionalProperties": False, "required": ["id", "role"], "properties": {
        "id": {"type": "integer"}, "role": {"enum": ["admin", "editor", "viewer"]}}},
    "tags": {"type": "array", "items": {"type": "string"}},
    "items": {"type": "array", "items": {"type": "object", "additionalProperties": False, "required": ["sku", "qty"],
              "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"},
                             "unit": {"enum": ["kg", "pcs", "l"]}}}}}}
LARGE_TYPES: list[tuple[Schema, Any]] = [
    ({"type": "string"}, "some text"), ({"type": "integer"}, 42), ({"type": "number"}, 3.25), ({"type": "boolean"},
    False), ({"enum": ["low", "mid", "high"]}, "mid"), ({"type": "array", "items": {"type": "string"}}, ["a", "b"])]
LARGE: Schema = {"type": "object", "additionalProperties": False, "required": [f"field_{i}" for i in range(30)],
                 "properties": {f"field_{i}": LARGE_TYPES[i % 6][0] for i in range(30)}}
TIMED: list[tuple[str, Schema, Any]] = [
    ("flat", FLAT, {"name": "Ada Lovelace", "age": 36, "ok": True}),
    ("nested", NESTED, {"user": {"id": 7, "role": "editor"}, "tags": ["x", "y"],
                        "items": [{"sku": "A-1", "qty": 2, "unit": "kg"}, {"sku": "B-2", "qty": 1}]}),
    ("large30", LARGE, {f"field_{i}": LARGE_TYPES[i % 6][1] for i in range(30)}),
]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


def stats(us: list[float]) -> str:
    s = sorted(us)
    return f"mean {statistics.fmean(s):7.1f}  p50 {s[len(s) // 2]:7.1f}  p99 {s[min(len(s) - 1, int(len(s) * 0.99))]:7.1f}"


class LLG:
    name = "llguidance"
    warnings = ""

    def __init__(self, hf: Any, vocab: int) -> None:
        self.tok, self.setup_s = timed(lambda: llguidance.hf.from_tokenizer(hf, n_vocab=vocab))
        self.vocab = vocab

    def compile(self, schema: Schema) -> str:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"lenient": False})
        is_error, msgs = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.tok)
        if is_error:
            raise ValueError(msgs[0] if msgs else "invalid grammar")
        self.warnings = "; ".join(msgs)
        return grammar

    def matcher(self, grammar: str) -> llguidance.LLMatcher:
        return llguidance.LLMatcher(self.tok, grammar, log_level=0)

    def accepts(self, grammar: str, ids: list[int]) -> bool:
        m = self.matcher(grammar)
        return m.consume_tokens(ids) and m.is_accepting() and not m.is_error()

    def walk(self, grammar: str, ids: list[int]) -> list[float]:
        m, mask, out = self.matcher(grammar), lltorch.allocate_token_bitmask(1, self.vocab), []
        for t in ids:
            out.append(timed(lambda: lltorch.fill_next_token_bitmask(m, mask, 0))[1] * 1e6)
            assert m.consume_token(t), m.get_error()
        return out

    def walk_batch(self, grammar: str, ids: list[int]) -> list[float]:
        ex, ms = llguidance.LLExecutor(), [self.matcher(grammar) for _ in range(BATCH)]
        mask, out, rows = lltorch.allocate_token_bitmask(BATCH, self.vocab), [], [(m, i) for i, m in enumerate(ms)]
        for t in ids:
            out.append(timed(lambda: lltorch.fill_next_token_bitmask_par(ex, rows, mask))[1] * 1e6)
            assert all(m.consume_token(t) for m in ms)
        return out


class XGR:
    name = "xgrammar"
    warnings = ""  # xgrammar logs its warnings to stderr instead

    def __init__(self, hf: Any, vocab: int, eos: int) -> None:
        def setup() -> tuple[xg.TokenizerInfo, xg.GrammarCompiler]:
            info = xg.TokenizerInfo.from_huggingface(hf, vocab_size=vocab)
            return info, xg.GrammarCompiler(info, cache_enabled=False)

        (self.info, self.compiler), self.setup_s = timed(setup)
        self.vocab, self.eos = vocab, eos

    def compile(self, schema: Schema) -> xg.CompiledGrammar:
        return self.compiler.compile_json_schema(json.dumps(schema), strict_mode=True)

    def accepts(self, grammar: xg.CompiledGrammar, ids: list[int]) -> bool:
        m = xg.GrammarMatcher(grammar)
        return all(m.accept_token(t) for t in ids) and m.accept_token(self.eos) and m.is_terminated()

    def walk(self, grammar: xg.CompiledGrammar, ids: list[int]) -> list[float]:
        m, mask, out = xg.GrammarMatcher(grammar), xg.allocate_token_bitmask(1, self.vocab), []
        for t in ids:
            out.append(timed(lambda: m.fill_next_token_bitmask(mask))[1] * 1e6)
            assert m.accept_token(t)
        return out

    def walk_batch(self, grammar: xg.CompiledGrammar, ids: list[int]) -> list[float]:
        bm, ms = xg.BatchGrammarMatcher(), [xg.GrammarMatcher(grammar) for _ in range(BATCH)]
        mask, out = xg.allocate_token_bitmask(BATCH, self.vocab), []
        for t in ids:
            out.append(timed(lambda: bm.batch_fill_next_token_bitmask(ms, mask))[1] * 1e6)
            assert all(xg.BatchGrammarMatcher.batch_accept_token(ms, [t] * BATCH))
        return out


def coverage(backend: LLG | XGR, schema: Schema, good: list[int], bad: list[int]) -> tuple[str, str]:
    try:
        grammar = backend.compile(schema)
    except Exception as exc:  # both libraries raise assorted types for unsupported schemas
        return "err", str(exc).splitlines()[0][:70] if str(exc) else type(exc).__name__
    warn = f" (warning: {backend.warnings[:60]})" if backend.warnings else ""
    if not backend.accepts(grammar, good):
        return "bad", "valid instance rejected" + warn
    return ("ignored", "invalid instance accepted" + warn) if backend.accepts(grammar, bad) else ("ok", warn.strip())


def main() -> None:
    ckpt = GgufCheckpoint(resolve_model(None).path)
    hf = ckpt.load_tokenizer()
    vocab, eos = int(ckpt.config.vocab_size), ckpt.eos_token_ids()[0]
    print(f"tokenizer: SmolLM2-135M-Instruct GGUF, vocab {vocab}, eos {eos}  | llguidance "
          f"{importlib.metadata.version('llguidance')}, xgrammar {importlib.metadata.version('xgrammar')}, "
          f"torch {importlib.metadata.version('torch')}")
    backends: list[LLG | XGR] = [LLG(hf, vocab), XGR(hf, vocab, eos)]
    print("\n== tokenizer setup ==")
    for b in backends:
        print(f"{b.name:11s} {b.setup_s * 1e3:8.1f} ms")

    def encode(value: Any) -> list[int]:
        return list(hf.encode(json.dumps(value, separators=(",", ":")), add_special_tokens=False))

    print("\n== JSON-schema coverage (strict) ==")
    print(f"{'feature':30s} {'llguidance':10s} {'xgrammar':10s} notes")
    oks = {b.name: 0 for b in backends}
    for feature, schema, good, bad in CASES:
        res = [coverage(b, schema, encode(good), encode(bad)) for b in backends]
        for b, (verdict, _) in zip(backends, res, strict=True):
            oks[b.name] += verdict == "ok"
        notes = "; ".join(f"{b.name[:3]}: {n}" for b, (_, n) in zip(backends, res, strict=True) if n)
        print(f"{feature:30s} {res[0][0]:10s} {res[1][0]:10s} {notes}")
    print("ok totals: " + ", ".join(f"{k} {v}/{len(CASES)}" for k, v in oks.items()))

    print(f"\n== per-token bitmask time (us), {REPS} walks each; batch = {BATCH} matchers per step ==")
    means: dict[str, list[float]] = {b.name: [] for b in backends}
    for label, schema, value in TIMED:
        ids = encode(value)
        for b in backends:
            try:
                grammar, comp_s = timed(lambda b=b, schema=schema: b.compile(schema))
            except Exception as exc:
                print(f"{label:8s} {b.name:11s} compile error: {exc}")
                continue
            walks = [b.walk(grammar, ids) for _ in range(REPS)]
            single = [us for w in walks for us in w]
            batch = [us for _ in range(REPS) for us in b.walk_batch(grammar, ids)]
            means[b.name].append(statistics.fmean(single))
            first = statistics.fmean(w[0] for w in walks)
            print(f"{label:8s} {b.name:11s} {len(ids):3d} tok  compile {comp_s * 1e3:5.1f} ms  1st mask {first:6.1f}"
                  f"  single {stats(single)}  | batch{BATCH} {stats(batch)}")

    llg, xgr = (statistics.fmean(means[b.name]) if means[b.name] else float("nan") for b in backends)
    # A decode step of even the 135M model costs milliseconds, so masks under 100 us are noise: coverage decides.
    fast = max(llg, xgr) < 100
    winner = max(oks, key=lambda k: (oks[k], 0 if fast else -statistics.fmean(means[k] or [float("inf")])))
    print(f"\nverdict: prefer {winner} -- strict coverage ok llguidance {oks['llguidance']}/{len(CASES)} vs xgrammar "
          f"{oks['xgrammar']}/{len(CASES)}; mean per-token mask {llg:.1f} us vs {xgr:.1f} us "
          f"({'both negligible next to a decode step' if fast else 'speed matters'}); "
          f"tokenizer setup {backends[0].setup_s:.2f} s vs {backends[1].setup_s:.2f} s")


if __name__ == "__main__":
    main()
