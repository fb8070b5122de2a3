"""render_metrics: the engines' counters in Prometheus text format (prometheus_client)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agent_runtime.runtime import Runtime

# stats() key -> (metric name, help, kind)
_SERIES = {
    "running": ("agent_runtime_requests_running", "Requests holding KV blocks", "gauge"),
    "waiting": ("agent_runtime_requests_waiting", "Requests queued for admission", "gauge"),
    "kv_blocks_total": ("agent_runtime_kv_blocks_total", "KV cache blocks in the pool", "gauge"),
    "kv_blocks_used": ("agent_runtime_kv_blocks_used", "KV cache blocks held by requests", "gauge"),
    "prefix_cache_queries": ("agent_runtime_prefix_cache_queried_tokens", "Prompt tokens looked up", "counter"),
    "prefix_cache_hits": ("agent_runtime_prefix_cache_hit_tokens", "Prompt tokens served from cache", "counter"),
    "prompt_tokens": ("agent_runtime_prompt_tokens", "Prompt tokens received", "counter"),
    "generation_tokens": ("agent_runtime_generation_tokens", "Tokens generated", "counter"),
    "computed_tokens": ("agent_runtime_computed_tokens", "Tokens run through the model", "counter"),
    "requests_finished": ("agent_runtime_requests_finished", "Requests that ended normally", "counter"),
    "requests_aborted": ("agent_runtime_requests_aborted", "Requests cancelled by their client", "counter"),
    "requests_failed": ("agent_runtime_requests_failed", "Requests ended by an engine fault", "counter"),
    "preemptions": ("agent_runtime_preemptions", "Requests preempted for lack of KV blocks", "counter"),
    "engine_restarts": ("agent_runtime_engine_restarts", "Engine rebuilds after a failed step", "counter"),
    "ttft_p50_s": ("agent_runtime_ttft_p50_seconds", "Time to first token, median of recent requests", "gauge"),
    "ttft_p99_s": ("agent_runtime_ttft_p99_seconds", "Time to first token, p99 of recent requests", "gauge"),
    "itl_p50_s": ("agent_runtime_inter_token_latency_p50_seconds", "Inter-token latency, median", "gauge"),
    "itl_p99_s": ("agent_runtime_inter_token_latency_p99_seconds", "Inter-token latency, p99", "gauge"),
}

_REPLICA_SERIES = {
    "requests_routed": ("agent_runtime_replica_requests_routed", "Requests the router sent to this replica",
                        "counter"),
    "running": ("agent_runtime_replica_requests_running", "Requests holding KV blocks on this replica", "gauge"),
    "kv_blocks_used": ("agent_runtime_replica_kv_blocks_used", "KV cache blocks held on this replica", "gauge"),
    "prefix_cache_hits": ("agent_runtime_replica_prefix_cache_hit_tokens", "Prompt tokens this replica served "
                          "from its prefix cache", "counter"),
}


class _EngineCollector:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self):
        stats = {model: engine.stats() for model, engine in self.runtime.engines.items()}
        for key, (name, help_text, kind) in _SERIES.items():
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_text, labels=["model"])
            for model, values in stats.items():
                family.add_metric([model], float(values.get(key, 0.0)))
            yield family
        yield from self._replica_families()

    def _replica_families(self):
        """Per-replica series of data-parallel engines (with `replica_stats`), labelled model and replica."""
        replicas = {model: engine.replica_stats() for model, engine in self.runtime.engines.items()
                    if hasattr(engine, "replica_stats")}
        if not replicas:
            return
        for key, (name, help_text, kind) in _REPLICA_SERIES.items():
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, help_text, labels=["model", "replica"])
            for model, per in replicas.items():
                for index, values in enumerate(per):
                    family.add_metric([model, str(index)], float(values.get(key, 0.0)))
            yield family


def render_metrics(runtime: Runtime) -> str:
    registry = CollectorRegistry()
    registry.register(_EngineCollector(runtime))
    return generate_latest(registry).decode()
