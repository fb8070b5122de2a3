"""`agent-runtime bench`: TTFT, TPOT, prefill and decode throughput at several concurrency levels.

Our engine runs in this process (load, a short warm-up, then the levels in order). At level N, N
requests of --prompt-len tokens each arrive together and stream --gen-len greedy tokens, EOS
ignored; every prompt begins differently, so prefix caching cannot skip prefill. The metrics are
those of `agent_runtime.bench.summarise`. `--compare` runs the installed peers on the same GGUF
through `benchmarks/bench_concurrency.py` (each in a fresh process) and prints ours/peer ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent_runtime.bench import bench_prompts, measure_level, parse_levels, summarise

# (summary key, column title, decimals)
COLUMNS = (
    ("n", "N", 0),
    ("ttft_mean_ms", "TTFT mean ms", 1),
    ("ttft_p50_ms", "TTFT p50 ms", 1),
    ("tpot_ms", "TPOT ms", 2),
    ("prefill_tok_s", "prefill tok/s", 1),
    ("agg_decode_tok_s", "decode tok/s", 1),
    ("agg_tok_s", "total tok/s", 1),
)
# peer engine of benchmarks/bench_concurrency.py -> the module that must be importable
PEERS = {"mistralrs": "mistralrs", "llamacpp": "llama_cpp", "hf": "transformers"}
PEER_LABELS = {"mistralrs": "mistralrs", "llamacpp": "llama-cpp", "hf": "HF"}
HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_concurrency.py"


def concurrency_levels(text: str) -> list[int]:
    """argparse type of --concurrency; its error names the bad value."""
    try:
        return parse_levels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= 1")
    return value


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt-len", type=positive_int, default=512,
                        help="prompt tokens per request (default 512)")
    parser.add_argument("--gen-len", type=positive_int, default=128,
                        help="greedy new tokens per request, EOS ignored (default 128)")
    parser.add_argument("--concurrency", type=concurrency_levels, default=[1, 8, 32], metavar="N[,N...]",
                        help="comma-separated numbers of requests arriving together (default 1,8,32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--compare", action="store_true",
                        help="also run the installed peers (mistralrs, llama-cpp-python, HF transformers) "
                             "on the same GGUF (benchmarks/bench_concurrency.py); prints ours/peer ratios")


def run_bench(args: argparse.Namespace) -> int:
    from agent_runtime.cli import engine_options
    from engine import EngineConfig
    from engine.data_parallel import create_serving_engine

    levels = args.concurrency
    options = engine_options(args)
    options["max_num_seqs"] = max(options["max_num_seqs"], *levels)
    start = time.perf_counter()
    engine = create_serving_engine(EngineConfig(**options, model=args.model))
    load_s = time.perf_counter() - start
    compiled = getattr(getattr(engine, "core", None), "compiled", None)
    if compiled is not None:  # measure the compiled decode step, not the eager one it replaces
        print("waiting for the compiled decode step (torch.compile, in the background) ...", file=sys.stderr,
              flush=True)
        compiled.wait()
    loaded = engine.loaded
    report = {
        "model": str(loaded.source.path), "dtype": str(loaded.dtype).removeprefix("torch."),
        "device": str(loaded.device), "native": loaded.native, "prompt_len": args.prompt_len,
        "gen_len": args.gen_len, "load_s": load_s, "levels": [],
    }
    if args.prompt_len + args.gen_len > loaded.context_length:
        engine.shutdown()
        total = args.prompt_len + args.gen_len
        print(f"agent-runtime: error: --prompt-len + --gen-len = {total} exceeds the model's context length "
              f"{loaded.context_length}", file=sys.stderr)
        return 2
    prompts = bench_prompts(engine.tokenizer, 1 + sum(levels), args.prompt_len)
    progress = sys.stderr if args.json else sys.stdout
    print(f"model {report['model']} ({report['dtype']}, {report['device']}), loaded in {load_s:.2f} s; "
          f"{args.prompt_len}-token prompts, {args.gen_len} new tokens, greedy, EOS ignored",
          file=progress, flush=True)
    try:
        asyncio.run(measure_level(engine, prompts[:1], 8))  # warm-up
        used = 1
        for n in levels:
            stamps = asyncio.run(measure_level(engine, prompts[used:used + n], args.gen_len))
            used += n
            report["levels"].append(summarise({"n": n, "stamps": stamps}, args.prompt_len))
            print(f"  {n} concurrent: done", file=progress, flush=True)
    finally:
        engine.shutdown()
    if args.compare:
        report["compare"] = compare_peers(args, report, progress)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table("ours", report["levels"])
        if args.compare:
            print_comparison(report["compare"])
    return 0


def compare_peers(args: argparse.Namespace, report: dict, progress) -> dict:
    """Run each importable peer through the benchmark harness; ratios ours/peer per level."""
    out: dict = {"notes": [], "peers": {}}
    model = report["model"]
    if not model.endswith(".gguf"):
        out["notes"].append(f"peers need a GGUF model; {model} is not one: nothing compared")
        return out
    if not HARNESS.is_file():
        out["notes"].append(f"{HARNESS} not found (needs a source checkout): nothing compared")
        return out
    engines = []
    for engine, module in PEERS.items():
        if importlib.util.find_spec(module) is None:
            out["notes"].append(f"{PEER_LABELS[engine]}: skipped ({module} is not importable)")
        else:
            engines.append(engine)
    if not engines:
        return out
    threads = args.threads or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "peers.json"
        cmd = [sys.executable, str(HARNESS), "--engines", ",".join(engines), "--gguf", model,
               "--levels", ",".join(map(str, args.concurrency)), "--prompt-len", str(args.prompt_len),
               "--agg-prompt-len", str(args.prompt_len),
               "--new-tokens", str(args.gen_len), "--threads", str(threads), "--json", str(result_file),
               "--no-quality"]
        print(f"comparing with {', '.join(PEER_LABELS[e] for e in engines)} (one fresh process each) ...",
              file=progress, flush=True)
        proc = subprocess.run(cmd, stdout=progress, stderr=sys.stderr, text=True)
        if proc.returncode != 0:
            out["notes"].append(f"the harness exited with {proc.returncode}; peers that failed are missing")
        if not result_file.is_file():
            return out
        summary = json.loads(result_file.read_text())["summary"]
    ours = {lv["n"]: lv for lv in report["levels"]}
    for engine, levels in summary.items():
        rows = []
        for n, peer in sorted((int(k), v) for k, v in levels.items()):
            mine = ours[n]
            rows.append({**peer,
                         "ratio_decode_tok_s": _ratio(mine["agg_decode_tok_s"], peer["agg_decode_tok_s"]),
                         "ratio_prefill_tok_s": _ratio(mine["prefill_tok_s"], peer["prefill_tok_s"]),
                         "ratio_ttft_p50": _ratio(mine["ttft_p50_ms"], peer["ttft_p50_ms"]),
                         "ratio_tpot": _ratio(mine["tpot_ms"], peer["tpot_ms"])})
        out["peers"][engine] = rows
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def print_table(title: str, levels: list[dict]) -> None:
    header = [t for _, t, _ in COLUMNS]
    rows = [[f"{lv[k]:.{d}f}" for k, _, d in COLUMNS] for lv in levels]
    render(title, header, rows)


def print_comparison(compare: dict) -> None:
    for engine, levels in compare["peers"].items():
        print_table(PEER_LABELS[engine], levels)
    header = ["peer", "N", "decode tok/s", "prefill tok/s", "TTFT p50", "TPOT"]
    keys = ("ratio_decode_tok_s", "ratio_prefill_tok_s", "ratio_ttft_p50", "ratio_tpot")
    rows = [[PEER_LABELS[e], str(lv["n"])] + [_fmt(lv[k]) for k in keys]
            for e, levels in compare["peers"].items() for lv in levels]
    if rows:
        render("ours / peer (throughput: >1 is better; TTFT, TPOT: <1 is better)", header, rows)
    for note in compare["notes"]:
        print(f"note: {note}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A table through rich when it is installed, else plain aligned text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        print(f"\n{title}")
        for i, row in enumerate([header, *rows]):
            print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
            if i == 0:
                print("  ".join("-" * w for w in widths))
        return
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
