"""The one place where errors become HTTP responses: ``{"error": {code, message, data}}``.

A database that fails (a full disk, a lock held past its timeout, PostgreSQL down) is not a
bug of the request: it is answered ``503 unavailable`` with ``Retry-After``, in the same
shape, rather than a plain-text 500 after which the server drops the connection. Those
failures are logged once per kind per minute with a count (``hubbub.failure_log``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubbub.errors import ApiError, RateLimited, Unavailable
from hubbub.failure_log import FailureLog

__all__ = ["DATABASE_FAILURES", "ErrorOut", "error_responses", "install_error_handlers"]

logger = logging.getLogger(__name__)

DATABASE_FAILURES: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)
"""The database could not do it now (not: the request was wrong); answered 503."""
_DATABASE_RETRY_AFTER_S = 5


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
    retry_after = exc.retry_after if isinstance(exc, RateLimited | Unavailable) else None
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return JSONResponse(_body(exc.code, exc.message, exc.data), status_code=exc.status, headers=headers)


def _database_error(failures: FailureLog) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        failures.failed(exc)
        unavailable = Unavailable(
            "the database cannot answer now; try again later", retry_after=_DATABASE_RETRY_AFTER_S
        )
        return await _api_error(request, unavailable)

    return handle


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
    database_error = _database_error(FailureLog(logger, "a database request"))
    for failure in DATABASE_FAILURES:
        app.add_exception_handler(failure, database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
