"""The one place where errors become HTTP responses: ``{"error": {code, message, data}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubbub.errors import ApiError, RateLimited

__all__ = ["ErrorOut", "error_responses", "install_error_handlers"]


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable ``code``, a message for people, and details."""

    code: str = Field(description="Machine-readable, e.g. `invalid`, `not_found`, `weak_password`.")
    message: str
    data: dict[str, Any] = Field(description="Details of this code, e.g. `problems`, `reason`, `limit`.")


class ErrorOut(BaseModel):
    """Every error response of the API."""

    error: ErrorDetail


_MEANINGS = {
    401: "No valid access token (`signed_out` once its device was ended), or wrong credentials.",
    403: "Allowed to see it, not to change it (e.g. `not_admin`).",
    404: "No such resource, or none of yours: a non-member cannot tell a conversation exists.",
    409: "A conflict with the current state (e.g. `username_taken`, `group_full`).",
    422: "The request breaks a rule: `invalid` (with `data.problems`, one per field) or a specific code.",
    429: "Too many attempts: wait the `Retry-After` seconds.",
    503: "A part this request needs is not reachable now; try again later.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting the errors a group of routes can answer."""
    return {status: {"model": ErrorOut, "description": _MEANINGS[status]} for status in statuses}


def _body(code: str, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "data": data or {}}}


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return JSONResponse(_body(exc.code, exc.message, exc.data), status_code=exc.status, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    problems = [
        {"field": ".".join(str(part) for part in error["loc"] if part != "body"), "reason": error["msg"]}
        for error in exc.errors()
    ]
    message = "; ".join(f"{problem['field']}: {problem['reason']}" for problem in problems)
    return JSONResponse(_body("invalid", message, {"problems": problems}), status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it only
    code = "not_found" if exc.status_code == 404 else "http_error"  # noqa: PLR2004
    return JSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the API can produce through the same JSON shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
