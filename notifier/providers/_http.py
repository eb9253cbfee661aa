"""HTTP details the providers share: Retry-After, transport failures, tolerant JSON bodies.

Kept apart so every provider classifies a dropped connection or a ``Retry-After`` header the
same way: a transport failure is always ``retry_later`` (the push may never have left), and a
``Retry-After`` is read in both of its RFC 9110 forms.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import httpx
import orjson

from notifier.providers.base import Notification, PushOutcome

__all__ = ["json_object", "parse_retry_after", "status_outcome", "transport_failure"]

_logger = logging.getLogger(__name__)
_GONE = frozenset({HTTPStatus.NOT_FOUND, HTTPStatus.GONE})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP-date), or ``None``."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)


def transport_failure(service: str, notification: Notification, exc: httpx.HTTPError) -> PushOutcome:
    """A request that got no HTTP answer: retry, whatever the cause (timeout, refused, reset)."""
    _logger.warning(
        "%s push failed in transport: message_id=%s token_id=%s error=%s",
        service,
        notification.message_id,
        notification.token.token_id,
        type(exc).__name__,
    )
    if isinstance(exc, httpx.TimeoutException):
        return PushOutcome.retry_later("timeout")
    return PushOutcome.retry_later(f"transport_{type(exc).__name__}")


def json_object(content: bytes) -> Mapping[str, Any]:
    """The body as a JSON object, or an empty mapping when it is anything else."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def status_outcome(service: str, notification: Notification, response: httpx.Response) -> PushOutcome:
    """The plain-HTTP push services' answer (Web Push, push gateways) sorted into an outcome.

    2xx delivered; 404/410 the subscription or token is gone for good; 429 and 5xx retry
    later (``Retry-After`` honoured); anything else is a permanent failure, logged.
    """
    status = response.status_code
    if response.is_success:
        return PushOutcome.delivered(status)
    if status in _GONE:
        return PushOutcome.token_rejected(f"http_{status}", status)
    if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return PushOutcome.retry_later(f"http_{status}", status, retry_after)
    _logger.warning(
        "%s refused a push: message_id=%s token_id=%s status=%d",
        service,
        notification.message_id,
        notification.token.token_id,
        status,
    )
    return PushOutcome.permanent_failure(f"http_{status}", status)
