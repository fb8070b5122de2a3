"""CPU benchmark of our engine against mistralrs and llama-cpp-python (and HF) at 1, 8 and 32 requests.

At each level N, N requests arrive at once, each a different prompt (the PARAGRAPH prompt of
bench_cpu.py behind a different first word, so no two prompts share a first token and prefix
caching cannot help) of --prompt-len tokens for the one-request level and --agg-prompt-len tokens
above it, with --new-tokens greedy new tokens each, EOS ignored.
Each engine runs all levels in one fresh subprocess (load, a short warm-up, then the levels) and
returns per-token timestamps; the parent computes, per engine and level:
  - aggregate tok/s = all new tokens / (last token - arrival), so the prefills are included;
  - decode-only aggregate tok/s = tokens after each request's first / (last token - first first token);
  - TTFT p50/p99 from the common arrival time (queueing included), ITL p50/p99 over all requests' gaps.
Then the issue-13 table: load s, TTFT and prefill tok/s of the one-request level, decode tok/s at 1,
aggregate tok/s at 8 and 32, peak RSS, and quality = teacher-forced top-1 agreement with the fp32
reference (the GGUF dequantized to fp32 in our engine, `isq="none"`) over 512 positions of a fixed
text, for us and for llama.cpp (its logits with logits_all=True).

Our variants: `ours` is the default (GGUF weights kept quantized, bf16 activations, the native decode
step: every layer of a decode batch in one C++ call, nothing compiled), `ours-compiled` the same with
torch.compile's decode step instead (the measurement starts once compiling is done, its time is
reported apart), `ours-eager` neither, `ours-f32` the dense fp32 reference path.

    .venv/bin/python benchmarks/bench_concurrency.py --threads 2                 # ours, ours-compiled, peers
    .venv/bin/python benchmarks/bench_concurrency.py --engines ours,llamacpp --levels 1,8 --json conc.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import default_gguf_path, load_hf_tokenizer, parse_engines  # noqa: E402

from agent_runtime.bench import (  # noqa: E402
    FIRST_WORDS,
    PARAGRAPH,
    measure_level,
    peak_rss_mb,
    relative,
    summarise,
)

# Each prompt starts with its own word of FIRST_WORDS (words whose first token is taken are skipped):
# 1 warm-up prompt + sum(levels) measured ones.
ENGINES = ("ours", "ours-compiled", "ours-eager", "ours-f32", "mistralrs", "llamacpp", "hf")
DEFAULT_ENGINES = "ours,ours-compiled,mistralrs,llamacpp"
LABELS = {"ours": "ours (quantized, native)", "ours-compiled": "ours (quantized, compiled)",
          "ours-eager": "ours (quantized, eager)", "ours-f32": "ours (fp32 dense)", "mistralrs": "mistralrs", "llamacpp": "llama-cpp-python",
          "hf": "HF transformers (fp32)"}
# EngineConfig options of our variants (compile waits for the background compile before measuring)
OURS = {"ours": {}, "ours-compiled": {"native_decode": False},
        "ours-eager": {"compile": False, "native_decode": False},
        "ours-f32": {"dtype": "f32", "isq": "none", "compile": False}}
# Highest level a slow peer runs: mistralrs prefills ~42 tok/s on this model and takes its requests
# one at a time, so 32 x 512-token prompts would take ~7 minutes.
MAX_LEVEL = {"mistralrs": 8, "hf": 8}
N_QUALITY = 512  # teacher-forced positions of the quality check
PEER_MODULES = {"mistralrs": "mistralrs", "llamacpp": "llama_cpp", "hf": "transformers"}
NOTES = {
    "mistralrs": "request i+1 is submitted only after request i streamed its first token (its batched "
                 "prefill crashes on CPU); decode steps still batch",
    "llamacpp": "single-sequence binding: the N requests run one after another (FCFS), so TTFT includes "
                "the wait for the requests before it (llama.cpp's own server could batch; this binding can't)",
    "hf": "one generate() per request, one after another (FCFS), fp32 (GGUF dequantised)",
}


def build_prompts(tokenizer, count: int, prompt_len: int) -> list[dict]:
    """`count` prompts of exactly `prompt_len` tokens, as ids and text, each with a different first token."""
    prompts, first_tokens = [], set()
    for word in FIRST_WORDS:
        ids = tokenizer(f"{word}. " + PARAGRAPH * 40, add_special_tokens=False)["input_ids"][:prompt_len]
        if ids[0] in first_tokens:  # e.g. "Basket" and "Bridge" both start with the token "B"
            continue
        text = tokenizer.decode(ids)
        if len(ids) != prompt_len or tokenizer(text, add_special_tokens=False)["input_ids"] != ids:
            sys.exit(f"the prompt starting with {word!r} does not round-trip to exactly {prompt_len} tokens")
        prompts.append({"ids": ids, "text": text})
        first_tokens.add(ids[0])
        if len(prompts) == count:
            return prompts
    sys.exit(f"the levels need {count} prompts with different first tokens but FIRST_WORDS gives only "
             f"{len(prompts)}: use fewer or smaller --levels")


def level_prompts(job: dict, engine: str) -> list[tuple[int, list[dict]]]:
    """The warm-up prompt is prompts[0]; each level then takes the next N unused prompts, long ones
    (--prompt-len) for one request, short ones (--agg-prompt-len) for several (levels above the
    engine's MAX_LEVEL are skipped)."""
    out, start = [], 1
    for n in job["levels"]:
        if n <= MAX_LEVEL.get(engine, n):
            out.append((n, job["prompts" if n == 1 else "short_prompts"][start:start + n]))
        start += n
    return out


# --- children: one engine per process; each returns raw timestamps per level ----------------------


def run_ours(job: dict, variant: str) -> dict:
    import asyncio
    import importlib.metadata

    from engine import AsyncEngine, EngineConfig

    start = time.perf_counter()
    eng = AsyncEngine(EngineConfig(model=job["gguf"], enable_prefix_caching=True, num_threads=job["threads"],
                                   max_num_seqs=max(EngineConfig.max_num_seqs, *job["levels"]),
                                   **{"compile": True, **OURS[variant]}))
    out = {"load_s": time.perf_counter() - start, "version": f"torch {importlib.metadata.version('torch')}",
           "native": eng.loaded.native, "model_path": str(eng.loaded.source.path), "levels": [],
           "dtype": str(eng.loaded.dtype).removeprefix("torch.")}
    compiled = eng.core.compiled
    if compiled is not None:
        if not compiled.wait(1800):
            raise RuntimeError(f"compiling the decode step failed: {compiled.failed!r}")
        out["compile_s"] = time.perf_counter() - start - out["load_s"]
    # From here on the main thread runs no torch work: the engine thread owns the only OpenMP pool.

    counters = ("prefix_cache_hits", "preemptions", "steps")
    try:
        asyncio.run(measure_level(eng, [job["prompts"][0]["ids"]], 8))
        for n, prompts in level_prompts(job, variant):
            before, load = eng.stats(), os.getloadavg()[0]
            stamps = asyncio.run(measure_level(eng, [p["ids"] for p in prompts], job["new_tokens"]))
            after = eng.stats()
            out["levels"].append({"n": n, "loadavg_1m_before": load, "stamps": stamps,
                                  **{k: after[k] - before[k] for k in counters}})
            if n == 1:
                out["peak_rss_1_mb"] = peak_rss_mb()
        out["peak_rss_mb"] = peak_rss_mb()
        if job["quality_ids"]:
            ids = job["quality_ids"]
            out["top1"] = asyncio.run(eng.run_on_engine_thread(
                lambda: eng.core.prompt_logits(ids).argmax(-1).tolist()))
    finally:
        eng.shutdown()
    return out


def run_mistralrs(job: dict) -> dict:
    import importlib.metadata

    from mistralrs import ChatCompletionRequest, Runner, Which

    gguf = Path(job["gguf"])
    # A chat template that passes the message through verbatim, so mistralrs sees the same raw prompt
    # tokens as the others (its streaming API is chat-only, and the GGUF's template adds ~30 tokens).
    with tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False) as template:
        template.write("{% for message in messages %}{{ message['content'] }}{% endfor %}")
    start = time.perf_counter()
    runner = Runner(which=Which.GGUF(quantized_model_id=str(gguf.parent), quantized_filename=gguf.name),
                    max_seqs=max(job["levels"]), prefix_cache_n=0, token_source="none",
                    jinja_explicit=template.name)
    out = {"load_s": time.perf_counter() - start, "version": importlib.metadata.version("mistralrs"),
           "kv_cache": "f32" if os.environ.get("MISTRALRS_CPU_KV_F32") else "f16 (default)", "levels": [],
           "prompt_token_mismatches": sum(runner.tokenize_text(p["text"], False, None) != p["ids"]
                                          for p in job["prompts"])}

    def submit(text: str, n_new: int):
        return runner.send_chat_completion_request(ChatCompletionRequest(
            messages=[{"role": "user", "content": text}], model="default", max_tokens=n_new,
            temperature=0.0, top_k=1, ignore_eos=True, stream=True))

    def level(prompts: list[dict], n_new: int) -> tuple[float, list[list], list[int]]:
        stamps: list[list] = [[] for _ in prompts]
        counted = [0] * len(prompts)  # the engine's own completion_tokens, from the last chunk's usage
        errors: list[BaseException] = []

        def consume(i: int, stream) -> None:
            try:
                for chunk in stream:
                    stamps[i].append((time.perf_counter(), 1))  # one streamed chunk per sampled token
                    if chunk.usage is not None:
                        counted[i] = chunk.usage.completion_tokens
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
                errors.append(exc)

        threads = []
        t0 = time.perf_counter()
        for i, p in enumerate(prompts):
            stream = submit(p["text"], n_new)
            first = next(stream)  # staggered: the next prompt waits for this one's prefill
            stamps[i].append((time.perf_counter(), 1))
            if first.usage is not None:
                counted[i] = first.usage.completion_tokens
            threads.append(threading.Thread(target=consume, args=(i, stream)))
            threads[-1].start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return t0, stamps, counted

    try:
        level(job["prompts"][:1], 8)
        for n, prompts in level_prompts(job, ENGINE):
            load = os.getloadavg()[0]
            t0, stamps, counted = level(prompts, job["new_tokens"])
            out["levels"].append({"n": n, "loadavg_1m_before": load, "stamps": relative(t0, stamps),
                                  "engine_completion_tokens": sum(counted)})
    finally:
        os.unlink(template.name)
    return out


def run_llamacpp(job: dict) -> dict:
    import llama_cpp

    start = time.perf_counter()
    llm = llama_cpp.Llama(model_path=job["gguf"], n_ctx=max(512, job["prompt_len"] + job["new_tokens"] + 64),
                          n_batch=512, n_ubatch=512, n_threads=job["threads"], n_threads_batch=job["threads"],
                          verbose=False)
    out = {"load_s": time.perf_counter() - start, "version": llama_cpp.__version__, "levels": []}

    def one(ids: list[int], n_new: int, stamps: list) -> None:
        # reset=True: a new sequence (prompts differ at token 0, so no KV prefix is reused)
        for _ in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            stamps.append((time.perf_counter(), 1))
            if len(stamps) >= n_new:
                break

    one(job["prompts"][0]["ids"], 8, [])
    for n, prompts in level_prompts(job, ENGINE):
        load = os.getloadavg()[0]
        stamps: list[list] = [[] for _ in prompts]
        t0 = time.perf_counter()
        for p, s in zip(prompts, stamps, strict=True):  # FCFS: the binding runs one sequence at a time
            one(p["ids"], job["new_tokens"], s)
        out["levels"].append({"n": n, "loadavg_1m_before": load, "stamps": relative(t0, stamps)})
        if n == 1:
            out["peak_rss_1_mb"] = peak_rss_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    if job["quality_ids"]:
        del llm
        ids = job["quality_ids"]
        scorer = llama_cpp.Llama(model_path=job["gguf"], n_ctx=len(ids) + 8, n_batch=512, n_ubatch=512,
                                 n_threads=job["threads"], n_threads_batch=job["threads"], logits_all=True,
                                 verbose=False)
        scorer.eval(ids)
        out["top1"] = [int(row.argmax()) for row in scorer.scores[: len(ids)]]
    return out


def run_hf(job: dict) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(job["threads"])
    gguf = Path(job["gguf"])
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    out = {"load_s": time.perf_counter() - start, "levels": [],
           "version": f"transformers {transformers.__version__} / torch {torch.__version__}"}

    class Stamps(BaseStreamer):
        def __init__(self, stamps: list) -> None:
            self.stamps, self.prompt_seen = stamps, False

        def put(self, value) -> None:
            if self.prompt_seen:  # generate() pushes the prompt ids first
                self.stamps.append((time.perf_counter(), value.numel()))
            self.prompt_seen = True

        def end(self) -> None:
            pass

    def one(ids: list[int], n_new: int, stamps: list) -> None:
        x = torch.tensor([ids])
        with torch.inference_mode():
            model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n_new,
                           min_new_tokens=n_new, streamer=Stamps(stamps), pad_token_id=0)

    one(job["prompts"][0]["ids"], 8, [])
    for n, prompts in level_prompts(job, ENGINE):
        load = os.getloadavg()[0]
        stamps: list[list] = [[] for _ in prompts]
        t0 = time.perf_counter()
        for p, s in zip(prompts, stamps, strict=True):  # FCFS: one sequence at a time
            one(p["ids"], job["new_tokens"], s)
        out["levels"].append({"n": n, "loadavg_1m_before": load, "stamps": relative(t0, stamps)})
    return out


def run_reference(job: dict) -> dict:
    """Top-1 tokens of the fp32 reference (the GGUF dequantized to fp32) at every quality position."""
    from engine import LLM

    llm = LLM(job["gguf"], dtype="f32", isq="none", compile=False, num_threads=job["threads"])
    return {"top1": llm.prompt_logits(job["quality_ids"]).argmax(-1).tolist()}


ENGINE = ""  # the engine this child process runs


def child_main(engine: str) -> None:
    """Read the job (JSON) from stdin, write one JSON line of results to the original stdout."""
    job = json.load(sys.stdin)
    # Native libraries (mistralrs) log to fd 1: point it at stderr and keep a copy for the result.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    global ENGINE
    ENGINE = engine
    runners = {"mistralrs": run_mistralrs, "llamacpp": run_llamacpp, "hf": run_hf, "reference": run_reference}
    with contextlib.redirect_stdout(sys.stderr):
        result = run_ours(job, engine) if engine in OURS else runners[engine](job)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    os.write(result_fd, (json.dumps(result) + "\n").encode())


# --- parent: run the children, summarise, report ---------------------------------------------------


def run_child(engine: str, job: dict) -> dict | None:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[name] = str(job["threads"])
    env.pop("MISTRALRS_CPU_KV_F32", None)  # measure mistralrs with its default (f16) CPU KV cache
    proc = subprocess.run([sys.executable, __file__, "--child", engine], input=json.dumps(job),
                          capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"{engine}: FAILED (exit {proc.returncode})\n{proc.stderr[-4000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def print_rows(header: list[str], rows: list[list[str]], group: list[str] | None = None) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    if group:  # a title over each level's columns (the engine column and 3 per level)
        spans = [widths[0]] + [sum(widths[1 + 3 * i:4 + 3 * i]) + 4 for i in range(len(group))]
        print("  ".join(title.center(w) for title, w in zip(["", *group], spans, strict=True)).rstrip())
    for i, row in enumerate([header, *rows]):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_report(summaries: dict[str, dict[int, dict]], levels: list[int]) -> None:
    engines = list(summaries)
    header = ["engine"] + [title for _ in levels for title in ("agg tok/s", "TTFT p50/p99 ms", "ITL p50/p99 ms")]
    rows = []
    for e in engines:
        row = [LABELS[e]]
        for n in levels:
            s = summaries[e].get(n)
            row += (["-"] * 3 if s is None else [f"{s['agg_tok_s']:.1f}", f"{s['ttft_p50_ms']:.0f} / {s['ttft_p99_ms']:.0f}",
                                                  f"{s['itl_p50_ms']:.1f} / {s['itl_p99_ms']:.1f}"])
        rows.append(row)
    print_rows(header, rows, [f"{n} concurrent" for n in levels])

    print("\nDecode-only aggregate tok/s = tokens after each request's first / (last token - earliest first token):")
    print_rows(["engine"] + [f"{n} concurrent" for n in levels],
               [[LABELS[e]] + [f"{summaries[e][n]['agg_decode_tok_s']:.1f}" if n in summaries[e] else "-"
                               for n in levels] for e in engines])

    def agg(e: str, n: int) -> float | None:
        return summaries.get(e, {}).get(n, {}).get("agg_tok_s")

    print()
    for ours in OURS:
        if agg(ours, 1) and agg(ours, 8):
            print(f"{LABELS[ours]}: aggregate at 8 / at 1 = {agg(ours, 8) / agg(ours, 1):.2f}x (target >= 3x)")
        for peer in ("mistralrs", "llamacpp", "hf"):
            ratios = [f"at {n}: {agg(ours, n) / agg(peer, n):.2f}x" for n in (8, 32) if agg(ours, n) and agg(peer, n)]
            if ratios:
                print(f"{LABELS[ours]} / {LABELS[peer]} aggregate tok/s " + ", ".join(ratios))


def print_cpu_table(results: dict[str, dict], summaries: dict[str, dict[int, dict]], prompt_len: int) -> None:
    """The issue-13 table, and our ratios to llama.cpp against its targets."""
    def level(e: str, n: int, key: str) -> float | None:
        return summaries[e].get(n, {}).get(key)

    def cell(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = ["engine", "load s", f"TTFT ms ({prompt_len})", "prefill tok/s", "decode tok/s @1", "agg tok/s @8",
              "agg tok/s @32", "peak RSS MB (@1 / all)", f"top-1 vs fp32 ({N_QUALITY})"]
    rows = [[LABELS[e], cell(r["load_s"], 2), cell(level(e, 1, "ttft_p50_ms"), 0), cell(level(e, 1, "prefill_tok_s")),
             cell(level(e, 1, "agg_decode_tok_s")), cell(level(e, 8, "agg_tok_s")), cell(level(e, 32, "agg_tok_s")),
             f"{cell(r.get('peak_rss_1_mb'), 0)} / {cell(r['peak_rss_mb'], 0)}", cell(r.get("quality"), 3)]
            for e, r in results.items()]
    print("\nCPU table (level 1 = one request with the prompt above):")
    print_rows(header, rows)
    if "ours" not in results or "llamacpp" not in results:
        return
    ours, cpp = results["ours"], results["llamacpp"]
    checks = [
        ("decode @1 / llama.cpp decode @1", level("ours", 1, "agg_decode_tok_s"), level("llamacpp", 1, "agg_decode_tok_s"), 1.0),
        ("prefill / llama.cpp prefill", level("ours", 1, "prefill_tok_s"), level("llamacpp", 1, "prefill_tok_s"), 1.5),
        ("agg @8 / llama.cpp decode @1", level("ours", 8, "agg_tok_s"), level("llamacpp", 1, "agg_decode_tok_s"), 3.0),
    ]
    for name, a, b, target in checks:
        if a and b:
            print(f"  {name}: {a / b:.2f}x (target >= {target}x) {'met' if a / b >= target else 'NOT met'}")
    print(f"  peak RSS {ours.get('peak_rss_1_mb', 0):.0f} MB after one request, {ours['peak_rss_mb']:.0f} MB after "
          f"all levels (target <= 600), load {ours['load_s']:.2f} s (target <= 3)")
    if "quality" in ours and "quality" in cpp:
        print(f"  quality: ours {ours['quality']:.3f} vs llama.cpp {cpp['quality']:.3f} (target: ours >= llama.cpp)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default=DEFAULT_ENGINES,
                    help=f"comma-separated subset of: {','.join(ENGINES)} (default: all but hf)")
    ap.add_argument("--levels", default="1,8,32", help="comma-separated numbers of concurrent requests")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="threads per engine (default: all cores available)")
    ap.add_argument("--new-tokens", type=int, default=128, help="greedy new tokens per request (EOS ignored)")
    ap.add_argument("--prompt-len", type=int, default=512, help="prompt tokens of the one-request level")
    ap.add_argument("--agg-prompt-len", type=int, default=40,
                    help="prompt tokens per request at levels above 1 (default 40, about PEERS.md's 8x "
                         "concurrent chat prompts)")
    ap.add_argument("--no-quality", action="store_true",
                    help="skip the teacher-forced top-1 agreement with the fp32 reference")
    ap.add_argument("--json", type=Path, help="write the config, raw timestamps and summaries to this file")
    ap.add_argument("--gguf", type=Path,
                    help="the GGUF model every engine loads (default: the embedded SmolLM2 Q4_1)")
    ap.add_argument("--child", choices=(*ENGINES, "reference"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return
    engines = parse_engines(ap, args.engines, ENGINES)
    try:
        levels = [int(n) for n in args.levels.split(",") if n.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        ap.error(f"invalid --levels {args.levels!r}: expected comma-separated integers >= 1, e.g. 1,8,32")
    if min(args.threads, args.new_tokens, args.prompt_len) < 1:
        ap.error("--threads, --new-tokens and --prompt-len must be >= 1")

    gguf = args.gguf.resolve() if args.gguf else default_gguf_path()
    tokenizer = load_hf_tokenizer(gguf)
    prompts = build_prompts(tokenizer, 1 + sum(levels), args.prompt_len)
    short_prompts = build_prompts(tokenizer, 1 + sum(levels), args.agg_prompt_len)
    quality_ids = [] if args.no_quality else tokenizer(PARAGRAPH * 40, add_special_tokens=False)["input_ids"][:N_QUALITY + 1]
    job = {"gguf": str(gguf), "threads": args.threads, "levels": levels, "new_tokens": args.new_tokens,
           "prompt_len": args.prompt_len, "prompts": prompts, "short_prompts": short_prompts,
           "quality_ids": quality_ids}
    print(f"model {gguf.name}; levels {levels}: N requests at once, each a different prompt (distinct first "
          f"token) of {args.prompt_len} tokens at level 1, {args.agg_prompt_len} above; {args.new_tokens} new "
          f"tokens, greedy, EOS ignored; "
          f"{args.threads} threads; one fresh process per engine", flush=True)

    results: dict[str, dict] = {}
    summaries: dict[str, dict[int, dict]] = {}
    failed = False
    reference = run_child("reference", job) if quality_ids else None
    if quality_ids and reference is None:
        failed = True
    for engine in engines:
        module = PEER_MODULES.get(engine)
        if module and importlib.util.find_spec(module) is None:
            print(f"  {LABELS[engine]}: skipped ({module} is not importable)", flush=True)
            continue
        load_before = os.getloadavg()[0]
        print(f"  {LABELS[engine]}: running (1-min load average before: {load_before:.2f}) ...", flush=True)
        start = time.perf_counter()
        result = run_child(engine, job)
        if result is None:
            failed = True
            continue
        result["loadavg_1m_before"] = load_before
        results[engine] = result
        summaries[engine] = {lv["n"]: summarise(lv, args.prompt_len if lv["n"] == 1 else args.agg_prompt_len)
                             for lv in result["levels"]}
        compile_note = f", compile {result['compile_s']:.1f} s (in the background)" if "compile_s" in result else ""
        print(f"    {result['version']}; load {result['load_s']:.2f} s{compile_note}, peak RSS "
              f"{result['peak_rss_mb']:.0f} MB, {time.perf_counter() - start:.0f} s in all", flush=True)
        if reference and "top1" in result:
            ref = reference["top1"][:N_QUALITY]
            result["quality"] = sum(a == b for a, b in zip(result["top1"][:N_QUALITY], ref, strict=True)) / len(ref)
        if result.get("prompt_token_mismatches"):
            print(f"    note: {result['prompt_token_mismatches']} prompts tokenize differently in {engine}")
        for lv, s in zip(result["levels"], summaries[engine].values(), strict=True):
            extra = ", ".join(f"{k}={lv[k]}" for k in ("prefix_cache_hits", "preemptions", "steps",
                                                        "engine_completion_tokens") if k in lv)
            print(f"    {s['n']:>3} concurrent: {s['agg_tok_s']:.1f} tok/s, wall {s['wall_s']:.1f} s, "
                  f"{s['tokens']} tokens (min {s['min_tokens_per_request']}/request)"
                  + (f", {extra}" if extra else "") + f" (1-min load average before: {s['loadavg_1m_before']:.2f})",
                  flush=True)
            if s["min_tokens_per_request"] != args.new_tokens:
                print(f"    WARNING: a request streamed {s['min_tokens_per_request']} tokens, not {args.new_tokens}")

    if summaries:
        print(f"\nAll times from the moment the N requests arrive together ({args.threads} threads):")
        print_report(summaries, levels)
        print_cpu_table(results, summaries, args.prompt_len)
        for engine, note in NOTES.items():
            if engine in summaries:
                print(f"note, {LABELS[engine]}: {note}")
        if "mistralrs" in results:
            print(f"note, mistralrs: {results['mistralrs']['kv_cache']} KV cache, prefix cache off")
    if args.json:
        config = {k: v for k, v in job.items() if k not in ("prompts", "short_prompts", "quality_ids")}
        args.json.write_text(json.dumps({"config": config, "runs": results, "summary": summaries}, indent=1))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
