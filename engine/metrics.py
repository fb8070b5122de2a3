"""EngineMetrics: counters and latency samples for /metrics and benchmarks."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

_SAMPLES = 4096  # latency samples kept per series (a sliding window, not a full history)


def percentile(values, q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class EngineMetrics:
    """Totals since start plus recent TTFT / inter-token latency samples (seconds)."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests_finished: int = 0
    requests_aborted: int = 0
    requests_failed: int = 0
    preemptions: int = 0
    engine_restarts: int = 0
    steps: int = 0
    computed_tokens: int = 0  # tokens run through the model (prefix-cache hits are not computed)
    ttft: deque = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    inter_token_latency: deque = field(default_factory=lambda: deque(maxlen=_SAMPLES))

    def summary(self) -> dict[str, float]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
            "requests_finished": self.requests_finished,
            "requests_aborted": self.requests_aborted,
            "requests_failed": self.requests_failed,
            "preemptions": self.preemptions,
            "engine_restarts": self.engine_restarts,
            "steps": self.steps,
            "computed_tokens": self.computed_tokens,
            "ttft_p50_s": percentile(self.ttft, 50),
            "ttft_p99_s": percentile(self.ttft, 99),
            "itl_p50_s": percentile(self.inter_token_latency, 50),
            "itl_p99_s": percentile(self.inter_token_latency, 99),
        }
