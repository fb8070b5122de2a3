"""The inference engine: models, loading, sampling, the serving core, and the Python API.

    from engine import LLM, SamplingParams          # synchronous, for scripts
    from engine import AsyncEngine, EngineConfig    # asyncio streams, for servers
"""

from engine.async_engine import AsyncEngine
from engine.config import EngineConfig
from engine.errors import (
    ContextLengthError,
    EngineError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    RequestFailedError,
    SamplingParamsError,
    UnsupportedArchitectureError,
)
from engine.llm import LLM
from engine.outputs import RequestOutput, StreamChunk
from engine.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "AsyncEngine",
    "EngineConfig",
    "RequestFailedError",
    "SamplingParams",
    "RequestOutput",
    "StreamChunk",
    "EngineError",
    "ModelNotFoundError",
    "ModelLoadError",
    "UnsupportedArchitectureError",
    "InvalidRequestError",
    "SamplingParamsError",
    "ContextLengthError",
]
