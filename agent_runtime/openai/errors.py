"""OpenAI error bodies: every failure the API returns has the shape {"error": {message, type, param, code}}."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_runtime.runtime import UnknownModelError
from engine.errors import ContextLengthError, EngineError, InvalidRequestError, RequestFailedError


class ApiError(Exception):
    """An error to send as an OpenAI error body with `status`."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def to_api_error(exc: Exception) -> ApiError:
    """The one place engine and runtime exceptions become HTTP statuses."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownModelError):
        return ApiError(404, str(exc), "invalid_request_error", "model", "model_not_found")
    if isinstance(exc, ContextLengthError):
        return ApiError(400, str(exc), "invalid_request_error", "messages", "context_length_exceeded")
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, str(exc), "invalid_request_error")
    if isinstance(exc, RequestFailedError):
        return ApiError(500, str(exc), "server_error", code="engine_error")
    if isinstance(exc, EngineError):
        return ApiError(500, str(exc), "server_error")
    return ApiError(500, f"internal error: {exc.__class__.__name__}", "server_error")


def error_response(exc: Exception) -> JSONResponse:
    err = to_api_error(exc)
    return JSONResponse(error_body(err.message, err.type, err.param, err.code), status_code=err.status,
                        headers=err.headers)


def install_handlers(app) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(f"invalid JSON body: {first.get('msg', '')}", "invalid_request_error",
                                           None, "invalid_json"), status_code=400)
        param = ".".join(location) or None
        message = f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request")
        return JSONResponse(error_body(message, "invalid_request_error", param, "invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    for known in (ApiError, EngineError, UnknownModelError):
        app.add_exception_handler(known, lambda _request, exc: error_response(exc))

    @app.exception_handler(Exception)
    async def anything(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)
