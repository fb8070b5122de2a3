"""Benchmark measurements shared by `agent-runtime bench` and the scripts in benchmarks/."""

from agent_runtime.bench.measure import (
    FIRST_WORDS,
    PARAGRAPH,
    bench_prompts,
    measure_level,
    parse_levels,
    peak_rss_mb,
    relative,
    summarise,
)

__all__ = ["FIRST_WORDS", "PARAGRAPH", "bench_prompts", "measure_level", "parse_levels", "peak_rss_mb",
           "relative", "summarise"]
