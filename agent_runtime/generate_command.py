"""`agent-runtime generate`: stream one completion to stdout."""

from __future__ import annotations

import argparse
import sys
import time

from engine import LLM, SamplingParams


def load_llm(args: argparse.Namespace) -> LLM:
    """The LLM the shared model and engine options describe."""
    from agent_runtime.cli import engine_options

    # One completion: compiling the decode step in the background would not finish before it does.
    return LLM(args.model, **{**engine_options(args), "compile": False})


def run_generate(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        max_tokens=args.max_tokens,
        stop=tuple(args.stop),
        ignore_eos=args.ignore_eos,
    )
    llm = load_llm(args)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": prompt}
        ]
        stream = llm.stream_chat(messages, params)
    else:
        stream = llm.stream(prompt, params)
    start = time.perf_counter()
    first = None
    count = 0
    finish = None
    for chunk in stream:
        if first is None:
            first = time.perf_counter()
        count += len(chunk.token_ids)
        finish = chunk.finish_reason
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.stats and first is not None:
        end = time.perf_counter()
        decode = (count - 1) / (end - first) if count > 1 and end > first else 0.0
        print(f"[{count} tokens, finish={finish}, ttft {1000 * (first - start):.0f} ms, "
              f"decode {decode:.1f} tok/s]", file=sys.stderr)
    return 0
