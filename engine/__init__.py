"""The inference engine: models, loading, sampling, and the `LLM` Python API.

    from engine import LLM, SamplingParams
"""

from engine.errors import (
    ContextLengthError,
    EngineError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    SamplingParamsError,
    UnsupportedArchitectureError,
)
from engine.llm import LLM
from engine.outputs import RequestOutput, StreamChunk
from engine.sampling_params import SamplingParams

__all__ = [
    "LLM",
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
