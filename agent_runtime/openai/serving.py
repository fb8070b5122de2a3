"""What every generating route shares: model lookup, capacity admission, usage accounting."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Request

from agent_runtime.openai.errors import ApiError
from agent_runtime.runtime import Runtime
from engine import AsyncEngine


@dataclass
class Admission:
    """A request admitted to one model's engine; `end()` gives its capacity slot back (once)."""

    runtime: Runtime
    model: str
    engine: AsyncEngine
    ended: bool = False

    @classmethod
    def begin(cls, request: Request, model: str | None) -> Admission:
        runtime: Runtime = request.app.state.runtime
        model_id, engine = runtime.engine(model)
        if not runtime.capacity_left(model_id):
            raise ApiError(429, f"model {model_id!r} is at capacity; retry shortly", "rate_limit_error",
                           code="over_capacity", headers={"Retry-After": "1"})
        runtime.in_flight[model_id] = runtime.in_flight.get(model_id, 0) + 1
        return cls(runtime, model_id, engine)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.runtime.in_flight[self.model] -= 1


def usage(prompt_tokens: int, completion_tokens: int, start: float, first_token_at: float | None) -> dict:
    """OpenAI usage plus throughput: prompt tok/s up to the first token, completion tok/s after it."""
    now = time.perf_counter()
    prefill = (first_token_at or now) - start
    decode = now - (first_token_at or now)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_per_second": round(prompt_tokens / prefill, 2) if prefill > 0 else None,
        "completion_tokens_per_second": round((completion_tokens - 1) / decode, 2)
        if decode > 0 and completion_tokens > 1 else None,
    }
