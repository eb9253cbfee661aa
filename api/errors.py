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
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubbub.errors import ApiError, RateLimited, Unavailable
from hubbub.failure_log import FailureLog

__all__ = ["ErrorOut", "database_unavailable", "error_responses", "install_error_handlers"]

logger = logging.getLogger(__name__)

_DATABASE_RETRY_AFTER_S = 5
# SQLSTATE classes and codes of a server that cannot do it now, whatever the request: connection
# (08), insufficient resources such as a full disk (53), operator intervention such as a
# shutdown (57), system error (58), a read-only transaction (25006), a lock not available (55P03).
# asyncpg's errors reach SQLAlchemy as a plain DBAPIError, so the class alone does not say it.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")
_UNAVAILABLE_SQLSTATES = frozenset({"25006", "55P03"})


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "not now" (a 503) rather than a bug (a 500)."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True  # SQLite's full disk and locked database, a lost connection, an exhausted pool
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and (
        sqlstate.startswith(_UNAVAILABLE_SQLSTATE_CLASSES) or sqlstate in _UNAVAILABLE_SQLSTATES
    )


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
        if not database_unavailable(exc):
            raise exc  # a bug: the server's 500, with its traceback
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
    app.add_exception_handler(DBAPIError, _database_error(FailureLog(logger, "a database request")))
    app.add_exception_handler(PoolTimeout, _database_error(FailureLog(logger, "the database pool")))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
