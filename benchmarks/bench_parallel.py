"""Tensor and data parallelism on the CPU: aggregate tok/s of TP=1 vs TP=2 and DP=1 vs DP=2.

Each setting runs in a fresh subprocess (its own thread settings and workers): load, one short
warm-up request, then N requests arriving together per --levels (the workload of
bench_concurrency.py: distinct prompts of --prompt-len tokens, --new-tokens greedy tokens, EOS
ignored). Tensor parallelism needs dense weights, so the TP pair runs dense f32 (--isq none); the
DP pair runs the default (quantized) weights. Decode steps stay eager (no torch.compile) in all
four, so that only the parallelism differs. Each process splits the machine's cores between its
ranks or replicas.

    .venv/bin/python benchmarks/bench_parallel.py                    # embedded SmolLM2, levels 1,8
    .venv/bin/python benchmarks/bench_parallel.py --levels 1,8,16 --json parallel.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "tp1": {"isq": "none", "dtype": "f32"},
    "tp2": {"isq": "none", "dtype": "f32", "tensor_parallel_size": 2},
    "dp1": {},
    "dp2": {"data_parallel_size": 2},
}


def run_one(name: str, args: argparse.Namespace) -> dict:
    """In the subprocess: one setting, every level; a JSON-able report."""
    from agent_runtime.bench.measure import bench_prompts, measure_level, parse_levels, summarise
    from engine.config import EngineConfig
    from engine.data_parallel import create_serving_engine

    levels = parse_levels(args.levels)
    start = time.perf_counter()
    engine = create_serving_engine(EngineConfig(model=args.model, compile=False, **SETTINGS[name]))
    report = {
        "setting": name,
        "load_s": time.perf_counter() - start,
        "loadavg_1m": os.getloadavg()[0],
        "levels": [],
    }
    try:
        prompts = bench_prompts(engine.tokenizer, 1 + sum(levels), args.prompt_len)
        asyncio.run(measure_level(engine, prompts[:1], 8))
        used = 1
        for n in levels:
            stamps = asyncio.run(measure_level(engine, prompts[used : used + n], args.new_tokens))
            used += n
            report["levels"].append(summarise({"n": n, "stamps": stamps}, args.prompt_len))
    finally:
        engine.shutdown()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--levels", default="1,8", help="concurrency levels (default 1,8)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"subset of {','.join(SETTINGS)}")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the reports here")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # one setting, in a subprocess
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run, args)))
        return 0
    reports = []
    for name in args.settings.split(","):
        if name not in SETTINGS:
            parser.error(f"unknown setting {name!r}; valid: {', '.join(SETTINGS)}")
        forwarded = [a for a in sys.argv[1:] if not a.startswith("--json")]
        out = subprocess.run(
            [sys.executable, __file__, *forwarded, "--run", name], capture_output=True, text=True
        )
        if out.returncode != 0:
            print(f"{name} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            return 1
        reports.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(
            f"{name} done (load {reports[-1]['load_s']:.1f} s, load average {reports[-1]['loadavg_1m']:.2f})",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"{'setting':8} {'N':>3} {'agg tok/s':>10} {'decode tok/s':>13} "
        f"{'TTFT p50 ms':>12} {'ITL p50 ms':>11}"
    )
    for report in reports:
        for level in report["levels"]:
            print(
                f"{report['setting']:8} {level['n']:>3} {level['agg_tok_s']:>10.1f} "
                f"{level['agg_decode_tok_s']:>13.1f} {level['ttft_p50_ms']:>12.0f} "
                f"{level['itl_p50_ms']:>11.1f}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
