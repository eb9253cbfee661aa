"""Messages as they travel: what a device sends, what ingest accepts, what the persister commits.

DESIGN.md, "Topics" and "A message's way". The events built from them are ``hubbub.events``.

Every id in JSON is a string (64-bit ids do not fit JavaScript numbers); ``seq`` is a plain
number, dense per conversation. Times are ISO 8601 UTC with milliseconds.

The four message classes are made once or twice per message on the chat path, so they are
slotted dataclasses without ``frozen``: a frozen dataclass's ``__init__`` sets every field
through ``object.__setattr__``, which made building them ~4x slower (about 8 µs of the
platform's CPU per message on the 2-core bench machine). They are values all the same:
nothing assigns to their fields once built. Each writes its own ``__init__`` (``init=False``):
this module is compiled (``build_compiled.py``), and mypyc compiles a class's own ``__init__``
to C, where the one ``dataclass`` generates stays interpreted Python setting each field through
its descriptor (~600 ns a message object against ~60 ns); ``__eq__`` and ``__repr__`` are still
the dataclass's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from hubbub.errors import MessageRejected

__all__ = [
    "MAX_CMID_LENGTH",
    "AcceptedMessage",
    "CommitResult",
    "CommittedMessage",
    "SendRequest",
    "WireFormatError",
    "decode_accepted",
    "decode_commit_result",
    "decode_commit_results",
    "encode_accepted",
    "encode_commit_result",
    "encode_commit_results",
    "format_time",
    "parse_send",
    "validate_text",
]

MAX_CMID_LENGTH = 64
_SEND_KEYS = frozenset({"cmid", "text"})


@dataclass(slots=True, init=False)
class SendRequest:
    """A device's ``{"cmid", "text"}``, validated."""

    cmid: str
    text: str

    def __init__(self, cmid: str, text: str) -> None:
        self.cmid = cmid
        self.text = text


@dataclass(slots=True, init=False)
class AcceptedMessage:
    """A message ingest accepted: id, sender and time stamped by the server, not yet stored."""

    conversation_id: int
    message_id: int
    sender_id: int
    sender_device_id: str
    cmid: str
    text: str
    created_at_ms: int

    def __init__(  # noqa: PLR0917 - the message's fields, in order
        self,
        conversation_id: int,
        message_id: int,
        sender_id: int,
        sender_device_id: str,
        cmid: str,
        text: str,
        created_at_ms: int,
    ) -> None:
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.sender_id = sender_id
        self.sender_device_id = sender_device_id
        self.cmid = cmid
        self.text = text
        self.created_at_ms = created_at_ms


@dataclass(slots=True, init=False)
class CommittedMessage:
    """A stored message with its dense per-conversation ``seq``."""

    conversation_id: int
    message_id: int
    seq: int
    sender_id: int
    cmid: str
    text: str
    created_at_ms: int

    def __init__(  # noqa: PLR0917 - the message's fields, in order
        self,
        conversation_id: int,
        message_id: int,
        seq: int,
        sender_id: int,
        cmid: str,
        text: str,
        created_at_ms: int,
    ) -> None:
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.seq = seq
        self.sender_id = sender_id
        self.cmid = cmid
        self.text = text
        self.created_at_ms = created_at_ms


@dataclass(slots=True, init=False)
class CommitResult:
    """What committing one accepted message did: stored it, or found it stored already."""

    message: CommittedMessage
    duplicate: bool
    sender_device_id: str

    def __init__(self, message: CommittedMessage, duplicate: bool, sender_device_id: str) -> None:
        self.message = message
        self.duplicate = duplicate
        self.sender_device_id = sender_device_id


def validate_text(text: object, max_chars: int) -> str:
    """The text if it is a non-blank string of at most ``max_chars`` characters (code points)."""
    if not isinstance(text, str):
        raise MessageRejected("invalid", "text must be a string")
    if not text or text.isspace():  # blank, without copying the text as strip() would
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
    if len(body) != 2 or "text" not in body:  # noqa: PLR2004 - cmid and text: nearly every send
        unknown = ", ".join(sorted(body.keys() - _SEND_KEYS))
        if unknown:
            raise MessageRejected("invalid", f"unknown fields: {unknown} (text messages only)")
    return SendRequest(cmid, validate_text(body.get("text"), max_chars))


_TIMES: dict[int, str] = {}
_TIMES_LIMIT = 4_096


def format_time(ms: int) -> str:
    """``2026-11-25T13:51:27.123Z``; every event carries one, and a burst shares its second.

    Remembered per millisecond (a message's ``message`` and ``ack`` events format the same one).
    """
    text = _TIMES.get(ms)
    if text is None:
        if len(_TIMES) >= _TIMES_LIMIT:
            _TIMES.clear()
        seconds, millis = divmod(ms, 1000)
        text = _TIMES[ms] = f"{_format_second(seconds)}.{millis:03d}Z"
    return text


@functools.lru_cache(maxsize=64)
def _format_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


# --- wire codecs: how these travel between processes (JetStream, reply subjects) ----------------
#
# JSON objects with named fields, ids as decimal strings like every Hubbub JSON (they are 64-bit),
# ``seq`` and times as numbers. Decoding checks every field's type: a malformed message on the
# wire is a ``WireFormatError``, never a half-built message.


class WireFormatError(ValueError):
    """Bytes that are not an encoded ``AcceptedMessage`` / ``CommitResult``."""


def _id(body: dict[str, object], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, str) or not (value.isascii() and value.isdecimal()):
        raise WireFormatError(f"{key} must be a decimal string")
    return int(value)


def _int(body: dict[str, object], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireFormatError(f"{key} must be an integer")
    return value


def _str(body: dict[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise WireFormatError(f"{key} must be a string")
    return value


def _object(raw: object, what: str) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise WireFormatError(f"{what} must be a JSON object")
    return raw


def _loads(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireFormatError("not JSON") from exc


def _accepted_fields(message: AcceptedMessage) -> dict[str, object]:
    return {
        "conversation_id": str(message.conversation_id),
        "message_id": str(message.message_id),
        "sender_id": str(message.sender_id),
        "sender_device_id": message.sender_device_id,
        "cmid": message.cmid,
        "text": message.text,
        "created_at_ms": message.created_at_ms,
    }


def encode_accepted(message: AcceptedMessage) -> bytes:
    """An accepted message as JSON, for the accepted-messages stream."""
    return orjson.dumps(_accepted_fields(message))


def decode_accepted(data: bytes) -> AcceptedMessage:
    """The accepted message ``encode_accepted`` wrote; ``WireFormatError`` otherwise."""
    body = _object(_loads(data), "an accepted message")
    return AcceptedMessage(
        conversation_id=_id(body, "conversation_id"),
        message_id=_id(body, "message_id"),
        sender_id=_id(body, "sender_id"),
        sender_device_id=_str(body, "sender_device_id"),
        cmid=_str(body, "cmid"),
        text=_str(body, "text"),
        created_at_ms=_int(body, "created_at_ms"),
    )


def _result_fields(result: CommitResult) -> dict[str, object]:
    message = result.message
    return {
        "conversation_id": str(message.conversation_id),
        "message_id": str(message.message_id),
        "seq": message.seq,
        "sender_id": str(message.sender_id),
        "sender_device_id": result.sender_device_id,
        "cmid": message.cmid,
        "text": message.text,
        "created_at_ms": message.created_at_ms,
        "duplicate": result.duplicate,
    }


def _result(raw: object) -> CommitResult:
    body = _object(raw, "a commit result")
    duplicate = body.get("duplicate")
    if not isinstance(duplicate, bool):
        raise WireFormatError("duplicate must be a boolean")
    message = CommittedMessage(
        conversation_id=_id(body, "conversation_id"),
        message_id=_id(body, "message_id"),
        seq=_int(body, "seq"),
        sender_id=_id(body, "sender_id"),
        cmid=_str(body, "cmid"),
        text=_str(body, "text"),
        created_at_ms=_int(body, "created_at_ms"),
    )
    return CommitResult(message, duplicate, _str(body, "sender_device_id"))


def encode_commit_result(result: CommitResult) -> bytes:
    """One commit result as JSON (the committed-messages stream carries one per message)."""
    return orjson.dumps(_result_fields(result))


def decode_commit_result(data: bytes) -> CommitResult:
    """The commit result ``encode_commit_result`` wrote; ``WireFormatError`` otherwise."""
    return _result(_loads(data))


def encode_commit_results(results: Sequence[CommitResult]) -> bytes:
    """Commit results as a JSON array (a reply to a process that submitted them)."""
    return orjson.dumps([_result_fields(result) for result in results])


def decode_commit_results(data: bytes) -> list[CommitResult]:
    """The commit results ``encode_commit_results`` wrote; ``WireFormatError`` otherwise."""
    raw = _loads(data)
    if not isinstance(raw, list):
        raise WireFormatError("commit results must be a JSON array")
    return [_result(item) for item in raw]
