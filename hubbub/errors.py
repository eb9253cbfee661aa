"""The one exception tree of Hubbub.

::

    HubbubError
    ├── SettingsError            a setting is missing or invalid; start-up stops
    ├── InvalidToken             an access/refresh/service token is expired, forged or mis-bound
    ├── MessageRejected          a send was refused; becomes an ``error`` inbox event (``code``)
    ├── CommitFailed             a batch was not committed; nothing was acknowledged, senders resend
    └── ApiError                 a REST failure: ``code``, HTTP ``status`` and ``data``
        ├── InvalidInput         422
        ├── Unauthorized         401
        ├── Forbidden            403
        ├── NotFound             404
        ├── Conflict             409
        ├── RateLimited          429 (``retry_after`` seconds)
        └── Unavailable          503 (a part this request needs is elsewhere or failing)

Components raise these; the API turns ``ApiError`` into responses in one handler and
the broker turns ``MessageRejected`` into an ``error`` event for the sending device.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ApiError",
    "CommitFailed",
    "Conflict",
    "Forbidden",
    "HubbubError",
    "InvalidInput",
    "InvalidToken",
    "MessageRejected",
    "NotFound",
    "RateLimited",
    "SettingsError",
    "Unauthorized",
    "Unavailable",
]


class HubbubError(Exception):
    """Root of every error Hubbub raises on purpose."""


class SettingsError(HubbubError):
    """A setting is missing or invalid; the message names it."""


class InvalidToken(HubbubError):
    """A token cannot be trusted: expired, forged, wrong audience or bound to another device."""


class MessageRejected(HubbubError):
    """A message was refused; ``code`` is machine-readable (``too_long``, ``not_member``...).

    ``retry_after_ms`` says when a resend may succeed, for the codes that are not final.
    """

    def __init__(self, code: str, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms


class CommitFailed(HubbubError):
    """A batch of accepted messages was not committed (its senders' outboxes resend them)."""


class ApiError(HubbubError):
    """A REST error with a stable ``code``, an HTTP ``status`` and optional structured ``data``."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.data: dict[str, Any] = data or {}


class InvalidInput(ApiError):
    """The request is well-formed JSON but breaks a rule (length, limit, shape)."""

    status = 422
    default_code = "invalid"


class Unauthorized(ApiError):
    """No valid credentials; the same answer for an unknown user and a wrong password."""

    status = 401
    default_code = "unauthorized"


class Forbidden(ApiError):
    """Authenticated, but not allowed to do this."""

    status = 403
    default_code = "forbidden"


class NotFound(ApiError):
    """No such resource, or one the caller may not know exists."""

    status = 404
    default_code = "not_found"


class Conflict(ApiError):
    """The request clashes with existing state (a taken username, a full group)."""

    status = 409
    default_code = "conflict"


class RateLimited(ApiError):
    """Too many attempts; ``retry_after`` says when to try again."""

    status = 429
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, data={"retry_after": retry_after})
        self.retry_after = retry_after


class Unavailable(ApiError):
    """The request needs a part of the platform that is not reachable now (or that this process does not run).

    ``retry_after`` (seconds), when given, becomes the ``Retry-After`` header.
    """

    status = 503
    default_code = "unavailable"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        data: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        extra = {} if retry_after is None else {"retry_after": retry_after}
        super().__init__(message, code=code, data={**(data or {}), **extra})
        self.retry_after = retry_after
