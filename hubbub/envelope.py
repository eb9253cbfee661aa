"""Messages as they travel: what a device sends, what ingest accepts, what the persister commits.

DESIGN.md, "Topics" and "A message's way". The events built from them are ``hubbub.events``.

Every id in JSON is a string (64-bit ids do not fit JavaScript numbers); ``seq`` is a plain
number, dense per conversation. Times are ISO 8601 UTC with milliseconds.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import orjson

from hubbub.errors import MessageRejected

__all__ = [
    "MAX_CMID_LENGTH",
    "AcceptedMessage",
    "CommitResult",
    "CommittedMessage",
    "SendRequest",
    "format_time",
    "parse_send",
    "validate_text",
]

MAX_CMID_LENGTH = 64
_SEND_KEYS = frozenset({"cmid", "text"})


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A device's ``{"cmid", "text"}``, validated."""

    cmid: str
    text: str


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """A message ingest accepted: id, sender and time stamped by the server, not yet stored."""

    conversation_id: int
    message_id: int
    sender_id: int
    sender_device_id: str
    cmid: str
    text: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class CommittedMessage:
    """A stored message with its dense per-conversation ``seq``."""

    conversation_id: int
    message_id: int
    seq: int
    sender_id: int
    cmid: str
    text: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What committing one accepted message did: stored it, or found it stored already."""

    message: CommittedMessage
    duplicate: bool
    sender_device_id: str


def validate_text(text: object, max_chars: int) -> str:
    """The text if it is a non-blank string of at most ``max_chars`` characters (code points)."""
    if not isinstance(text, str):
        raise MessageRejected("invalid", "text must be a string")
    if not text.strip():
        raise MessageRejected("empty", "text is empty")
    if len(text) > max_chars:
        raise MessageRejected("too_long", f"text has {len(text)} characters; the limit is {max_chars}")
    return text


def parse_send(payload: bytes, max_chars: int) -> SendRequest:
    """Validate a ``conv/{cid}/send`` payload or raise ``MessageRejected`` with its code."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MessageRejected("invalid", "payload is not JSON (UTF-8)") from exc
    if not isinstance(body, dict):
        raise MessageRejected("invalid", 'payload must be a JSON object {"cmid", "text"}')
    cmid = body.get("cmid")
    if not isinstance(cmid, str) or not 1 <= len(cmid) <= MAX_CMID_LENGTH:
        raise MessageRejected("invalid", f"cmid must be a string of 1 to {MAX_CMID_LENGTH} characters")
    unknown = body.keys() - _SEND_KEYS
    if unknown:
        raise MessageRejected("invalid", f"unknown fields: {', '.join(sorted(unknown))} (text messages only)")
    return SendRequest(cmid=cmid, text=validate_text(body.get("text"), max_chars))


def format_time(ms: int) -> str:
    """``2026-11-25T13:51:27.123Z``; every event carries one, and a burst shares its second."""
    seconds, millis = divmod(ms, 1000)
    return f"{_format_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=64)
def _format_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
