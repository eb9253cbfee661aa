"""HTTP details the providers share: Retry-After, transport failures, tolerant JSON bodies.

Kept apart so every provider classifies a dropped connection or a ``Retry-After`` header the
same way: a transport failure is always ``retry_later`` (the push may never have left), and a
``Retry-After`` is read in both of its RFC 9110 forms.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from notifier.providers.base import PushOutcome

__all__ = ["json_object", "parse_retry_after", "transport_failure"]


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


def transport_failure(exc: httpx.HTTPError) -> PushOutcome:
    """A request that got no HTTP answer: retry, whatever the cause (timeout, refused, reset)."""
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
