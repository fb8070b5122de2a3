"""Workload and metrics of the throughput/latency benchmarks.

A level is N requests that arrive together. Each request streams (timestamp, tokens) pairs, stored
relative to the common arrival time; `summarise` turns one level's streams into TTFT, TPOT,
inter-token latency and aggregate prefill/decode throughput. Percentiles use nearest rank, as
`engine/metrics.py` does.
"""

from __future__ import annotations

import asyncio
import resource
import time

PARAGRAPH = (
    "The old lighthouse stood on a rocky point at the edge of the bay, and every "
    "evening the keeper climbed the narrow stairs to light the lamp. Ships passing "
    "in the night relied on its steady beam to find their way between the reefs. "
    "In the morning he would walk along the shore, collecting driftwood and "
    "watching the fishing boats return with their catch, while gulls circled "
    "overhead and the tide slowly crept back over the sand. "
)
# Words put in front of PARAGRAPH so that concurrent prompts differ from their first token on.
FIRST_WORDS = (
    "Amber Bridge Copper Desert Eagle Forest Garden Harbor Island Jungle Kettle Lemon Mountain "
    "Needle Ocean Pepper Quartz River Silver Tiger Umbrella Velvet Window Yellow Zebra Anchor "
    "Basket Candle Dolphin Engine Feather Glacier Hammer Ivory Jacket Kingdom Ladder Marble "
    "Nickel Orchard Pillow Rabbit Saddle Tunnel Violin Walnut Yogurt Arrow Blanket Cactus Dragon "
    "Falcon Guitar Helmet Insect Jasmine Kitten Lantern Meadow Napkin Oyster Parrot Rocket Sunset"
).split()


def parse_levels(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; ValueError naming the bad value for anything but integers >= 1."""
    levels = []
    for part in text.split(","):
        try:
            n = int(part.strip())
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"invalid concurrency level {part.strip()!r} in {text!r}: expected "
                             "comma-separated integers >= 1, e.g. 1,8,32")
        levels.append(n)
    return levels


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def bench_prompts(tokenizer, count: int, prompt_len: int) -> list[list[int]]:
    """`count` prompts of exactly `prompt_len` token ids with different beginnings.

    Prompt i is "<word> <i>. " + PARAGRAPH repeated, cut to `prompt_len` tokens, so no two prompts
    share their first KV-cache block and prefix caching cannot skip any prefill. `tokenizer` has
    `encode(text, add_special_tokens=False)` (the engine's `Tokenizer`).
    """
    repeat = PARAGRAPH * max(1, prompt_len // 40 + 2)
    prompts = []
    for i in range(count):
        ids = tokenizer.encode(f"{FIRST_WORDS[i % len(FIRST_WORDS)]} {i}. {repeat}", add_special_tokens=False)
        while len(ids) < prompt_len:  # a tokenizer with very long tokens: just repeat
            ids = ids + ids
        prompts.append(ids[:prompt_len])
    return prompts


def relative(t0: float, stamps: list[list]) -> list[list[tuple[float, int]]]:
    """Timestamps in seconds after the level's common arrival time t0."""
    return [[(t - t0, n) for t, n in s] for s in stamps]


async def measure_level(engine, prompts: list[list[int]], new_tokens: int) -> list[list[tuple[float, int]]]:
    """Stream all `prompts` at once through an `AsyncEngine` (greedy, EOS ignored); the relative stamps."""
    from engine import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    stamps: list[list] = [[] for _ in prompts]

    async def one(ids: list[int], out: list) -> None:
        async for chunk in engine.generate(ids, params):
            if chunk.token_ids:
                out.append((time.perf_counter(), len(chunk.token_ids)))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(ids, s) for ids, s in zip(prompts, stamps, strict=True)))
    return relative(t0, stamps)


def summarise(level: dict, prompt_len: int | None = None) -> dict:
    """Throughput and latency of one level: {"n": N, "stamps": relative stamps per request, ...}.

    - TTFT = first token - arrival (queueing included); mean, p50, p99.
    - TPOT = (last token - first token) / (tokens - 1) per request, averaged over requests.
    - ITL = gaps between consecutive tokens of one request, pooled over all requests (p50, p99).
    - agg tok/s = all new tokens / last token (prefills included).
    - decode tok/s (aggregate) = tokens after each request's first / (last token - earliest first token).
    - prefill tok/s (aggregate, with `prompt_len`) = N * prompt_len / latest first token.
    """
    from engine.metrics import percentile

    stamps = level["stamps"]
    firsts = [s[0][0] for s in stamps]
    last = max(s[-1][0] for s in stamps)
    tokens = [sum(n for _, n in s) for s in stamps]
    itl, tpot = [], []
    for s, count in zip(stamps, tokens, strict=True):
        for (t_prev, _), (t, n) in zip(s, s[1:], strict=False):
            itl.extend([(t - t_prev) / n] * n)  # a chunk of n tokens counts as n equal gaps
        if count > s[0][1]:
            tpot.append((s[-1][0] - s[0][0]) / (count - s[0][1]))
    after_first = sum(tokens) - sum(s[0][1] for s in stamps)
    out = {
        "n": level["n"],
        "tokens": sum(tokens),
        "min_tokens_per_request": min(tokens),
        "wall_s": last,
        "agg_tok_s": sum(tokens) / last,
        "agg_decode_tok_s": after_first / (last - min(firsts)) if last > min(firsts) else 0.0,
        "ttft_mean_ms": sum(firsts) / len(firsts) * 1e3,
        "ttft_p50_ms": percentile(firsts, 50) * 1e3,
        "ttft_p99_ms": percentile(firsts, 99) * 1e3,
        "tpot_ms": sum(tpot) / len(tpot) * 1e3 if tpot else 0.0,
        "itl_p50_ms": percentile(itl, 50) * 1e3 if itl else 0.0,
        "itl_p99_ms": percentile(itl, 99) * 1e3 if itl else 0.0,
    }
    if prompt_len is not None:
        out["prefill_tok_s"] = level["n"] * prompt_len / max(firsts)
    if "loadavg_1m_before" in level:
        out["loadavg_1m_before"] = level["loadavg_1m_before"]
    return out
