"""What a JSON-schema constraint costs: decode tok/s with and without it, at concurrency 1 and 8.

Both variants generate exactly --tokens tokens per request from the same chat prompt (the free one
ignores EOS; the constrained one follows a schema that cannot finish sooner: an array of at least
60 small objects), so the only difference is the grammar mask (computed by llguidance for every
constrained row of every step, then applied in the sampler). Runs alternate free/constrained for
--reps repetitions and the medians are compared. Target: constrained >= 0.9x free.

    .venv/bin/python benchmarks/bench_guided.py                  # embedded SmolLM2, f32, CPU
    .venv/bin/python benchmarks/bench_guided.py --dtype bf16 --concurrency 1,8,32 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from engine import LLM, SamplingParams
from engine.guided import GuidedDecoding

SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "minItems": 60,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 12},
                    "age": {"type": "integer", "minimum": 0, "maximum": 99},
                    "role": {"enum": ["engineer", "doctor", "artist", "pilot"]},
                },
                "required": ["name", "age", "role"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["people"],
    "additionalProperties": False,
}
PROMPT = [{"role": "user", "content": "List many people with their name, age and job as JSON."}]


def run(llm: LLM, concurrency: int, tokens: int, guided: GuidedDecoding | None) -> float:
    """Generated tokens per second of wall time for `concurrency` requests batched together."""
    params = [SamplingParams(temperature=0.7, seed=i, max_tokens=tokens, ignore_eos=guided is None,
                             guided=guided) for i in range(concurrency)]
    start = time.perf_counter()
    outputs = llm.chat([PROMPT] * concurrency, params)
    wall = time.perf_counter() - start
    generated = sum(len(o.token_ids) for o in outputs)
    short = [len(o.token_ids) for o in outputs if len(o.token_ids) < tokens]
    if short:
        raise RuntimeError(f"some requests stopped early ({short} tokens): the comparison would be unfair")
    return generated / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model source (default: the embedded SmolLM2)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "f32", "bf16", "f16"])
    ap.add_argument("--concurrency", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per request (default 128)")
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions (default 3)")
    args = ap.parse_args()
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
        if any(c < 1 for c in levels):
            raise ValueError
    except ValueError:
        ap.error(f"invalid --concurrency {args.concurrency!r}: expected comma-separated integers >= 1")

    llm = LLM(args.model, dtype=args.dtype)
    guided = GuidedDecoding.json_schema(SCHEMA)
    run(llm, 1, 8, guided)  # builds the llguidance tokenizer and warms the matcher path
    print(f"model {llm.loaded.source.name} ({llm.loaded.dtype}, {llm.loaded.device}), {args.tokens} tokens/request, "
          f"median of {args.reps}")
    print(f"{'concurrency':>11}  {'free tok/s':>10}  {'json tok/s':>10}  {'ratio':>6}")
    for level in levels:
        free, constrained = [], []
        for _ in range(args.reps):
            free.append(run(llm, level, args.tokens, None))
            constrained.append(run(llm, level, args.tokens, guided))
        f, c = statistics.median(free), statistics.median(constrained)
        print(f"{level:>11}  {f:>10.1f}  {c:>10.1f}  {c / f:>6.2f}")


if __name__ == "__main__":
    main()
