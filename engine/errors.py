"""Errors raised by the engine. Each message names the bad value and what would be valid."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelNotFoundError(EngineError):
    """The model a user named does not exist where they said (path, hub id, embedded package)."""


class ModelLoadError(EngineError):
    """A model file exists but cannot be read: truncated, corrupt, or missing tensors."""


class UnsupportedArchitectureError(EngineError):
    """No native implementation, and the transformers fallback is disabled or cannot run it."""


class InvalidRequestError(EngineError, ValueError):
    """A request the engine refuses: bad sampling values, a prompt too long for the context."""


class SamplingParamsError(InvalidRequestError):
    """A sampling parameter outside its valid range."""


class ContextLengthError(InvalidRequestError):
    """The prompt (plus the tokens asked for) does not fit the model's context window."""


class RequestFailedError(EngineError):
    """A request ended by an engine fault (its step raised); other requests and later ones go on."""


class EngineStepError(EngineError):
    """An engine step raised: names the requests it was running, keeps the cause."""

    def __init__(self, request_ids: list[str], cause: BaseException) -> None:
        super().__init__(f"engine step failed for {len(request_ids)} request(s): {cause!r}")
        self.request_ids = request_ids
        self.cause = cause


class TensorParallelError(EngineError):
    """A tensor-parallel group cannot be built or kept: a model it cannot split, workers that never joined."""


class WorkerDiedError(TensorParallelError):
    """A tensor-parallel worker process exited; the requests whose keys/values it held are lost."""


class CollectiveError(TensorParallelError):
    """A collective of a tensor-parallel group failed: a peer left the group, or did not answer in time."""
