"""Every event the server sends a device, typed once: the builders, and the shapes the contract is made of.

Also the two payloads a device publishes (``SendPayload``, ``TypingNotice``), so the whole MQTT
contract is described here.

Each event has one ``TypedDict`` here (its ``kind`` a ``Literal``) and one builder. The same
definitions give the JSON Schemas of the MQTT contract (``hubbub.asyncapi``) and the parsing of
the Python client (``parse_inbox_event``), so the server, the published document and the client
cannot drift apart.

The builders sit on the hot path (a ``message`` and an ``ack`` per message, built together), so
they live in ``hubbub.event_builders``, compiled with mypyc, and are re-exported here: mypyc
cannot compile these pydantic ``TypedDict``s. They fill plain dicts annotated with these types
and hand them to orjson. The types cost nothing at run time and nothing is validated per
message; mypy checks the builders against the types, and the tests validate what devices
receive against the generated schemas. ``error_event`` stays here, beside the codes it checks.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, NotRequired, get_args

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing_extensions on 3.11

from hubbub.envelope import MAX_CMID_LENGTH
from hubbub.errors import MessageRejected
from hubbub.event_builders import (
    ack_event,
    conversation_event,
    delivery_events,
    friend_event,
    message_event,
    message_json,
    presence_payload,
    push_register_again_event,
    receipt_event,
    typing_event,
)

__all__ = [
    "ERROR_CODES",
    "AckEvent",
    "ConversationAction",
    "ConversationEvent",
    "ConversationInfo",
    "ErrorCode",
    "ErrorEvent",
    "FriendAction",
    "FriendEvent",
    "InboxEvent",
    "MemberInfo",
    "MessageEvent",
    "MessageJson",
    "Presence",
    "PushEvent",
    "ReceiptEvent",
    "ResyncEvent",
    "SendPayload",
    "TypingEvent",
    "TypingNotice",
    "ack_event",
    "conversation_event",
    "delivery_events",
    "error_event",
    "friend_event",
    "inbox_event_adapter",
    "message_event",
    "message_json",
    "parse_inbox_event",
    "parse_presence",
    "presence_adapter",
    "presence_payload",
    "push_register_again_event",
    "receipt_event",
    "resync_event",
    "typing_event",
]

_EXACT = ConfigDict(extra="forbid")

Id = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{1,20}$",
        description="A 64-bit id as a decimal string (64-bit ids do not fit JavaScript numbers).",
    ),
]
Time = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        description="ISO 8601 UTC with milliseconds, e.g. 2026-11-25T13:51:27.123Z.",
    ),
]
Seq = Annotated[
    int, Field(ge=1, description="The message's place in its conversation: 1, 2, 3, ... no gaps.")
]
Cmid = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CMID_LENGTH,
        description="The client message id the sender chose (a UUID): resent, it is never stored twice.",
    ),
]

ErrorCode = Literal["invalid", "empty", "too_long", "not_member", "rate_limited", "unavailable"]
"""Why a send was refused: ``invalid`` (not ``{"cmid", "text"}``, or not a conversation topic),
``empty`` (blank text), ``too_long``, ``not_member`` (of the conversation), ``rate_limited``
(sending too fast: resend later), ``unavailable`` (the store could not commit it: resend later)."""
ERROR_CODES: frozenset[str] = frozenset(get_args(ErrorCode))

ConversationAction = Literal["created", "member_added", "member_removed", "renamed"]
FriendAction = Literal["requested", "accepted", "declined", "removed"]


@with_config(_EXACT)
class SendPayload(TypedDict):
    """What a device publishes to `conv/{cid}/send`."""

    cmid: Cmid
    text: Annotated[str, Field(min_length=1, description="Plain text, not blank.")]


@with_config(ConfigDict(extra="allow"))
class TypingNotice(TypedDict):
    """What a device publishes to `conv/{cid}/typing`: `{}` (the content is ignored)."""


@with_config(_EXACT)
class MessageJson(TypedDict):
    """A committed message, in events and in history alike."""

    conversation_id: Id
    message_id: Id
    seq: Seq
    sender_id: Id
    cmid: Cmid
    text: str
    created_at: Time


@with_config(_EXACT)
class MessageEvent(MessageJson):
    """A committed message, to every device of every member but the one that sent it."""

    kind: Literal["message"]


@with_config(_EXACT)
class AckEvent(TypedDict):
    """To the sender's devices: the message with `cmid` is stored as `message_id` at `seq`."""

    kind: Literal["ack"]
    conversation_id: Id
    cmid: Cmid
    message_id: Id
    seq: Seq
    created_at: Time


@with_config(_EXACT)
class ErrorEvent(TypedDict):
    """To the sending device: its send was refused; nothing was stored.

    `conversation_id` and `cmid` are null when the topic or payload did not say them.
    Every code but `rate_limited` and `unavailable` is final: resending the same message
    cannot succeed. Those two may carry `retry_after_ms`.
    """

    kind: Literal["error"]
    conversation_id: Id | None
    cmid: str | None
    code: ErrorCode
    message: Annotated[str, Field(description="For people, not for programs: match on `code`.")]
    retry_after_ms: NotRequired[
        Annotated[int, Field(ge=0, description="Resend the same message (same `cmid`) after this long.")]
    ]


@with_config(_EXACT)
class TypingEvent(TypedDict):
    """To the other members: `user_id` is typing in the conversation (never stored)."""

    kind: Literal["typing"]
    conversation_id: Id
    user_id: Id


@with_config(_EXACT)
class ReceiptEvent(TypedDict):
    """To the members: `user_id` has read everything up to `seq`."""

    kind: Literal["receipt"]
    conversation_id: Id
    user_id: Id
    seq: Annotated[int, Field(ge=0)]


@with_config(_EXACT)
class FriendEvent(TypedDict):
    """A friendship with `user_id` changed (a request, an answer, a removal)."""

    kind: Literal["friend"]
    action: FriendAction
    user_id: Id


@with_config(_EXACT)
class MemberInfo(TypedDict):
    """A member as listed in a conversation."""

    user_id: Id
    username: str
    display_name: str
    role: Literal["admin", "member"]


@with_config(_EXACT)
class ConversationInfo(TypedDict):
    """A conversation as its members see it (the REST `ConversationOut` without per-reader fields)."""

    id: Id
    type: Literal["direct", "group"]
    title: str | None
    members: list[MemberInfo]
    created_at: Time


@with_config(_EXACT)
class ConversationEvent(TypedDict):
    """A conversation was created or changed; `by` did it, `user_id` is the member added or removed."""

    kind: Literal["conversation"]
    action: ConversationAction
    by: Id
    user_id: Id | None
    conversation: ConversationInfo


@with_config(_EXACT)
class PushEvent(TypedDict):
    """The push service rejected this device's token for good: register a fresh one."""

    kind: Literal["push"]
    action: Literal["register_again"]


@with_config(_EXACT)
class ResyncEvent(TypedDict):
    """Events for you may have been lost: catch up as after a reconnect (`GET /v1/sync`).

    Sent by a broker node whose own link to the rest of the cluster dropped and came back while
    your device stayed connected to it: what was published for you meanwhile did not reach it.
    Your MQTT connection is fine; fetch what you missed (sync, and the conversation and friend
    lists if you keep them), merge by `seq` and ignore duplicates. One or many in a row ask for
    the same thing: a catch-up already under way that starts again once is enough.
    """

    kind: Literal["resync"]


@with_config(_EXACT)
class Presence(TypedDict):
    """A user's aggregated presence, retained on `presence/{uid}`."""

    user_id: Id
    status: Literal["online", "offline"]
    last_active_at: Annotated[Time | None, Field(description="Null for a user never seen online.")]


InboxEvent = Annotated[
    MessageEvent
    | AckEvent
    | ErrorEvent
    | ConversationEvent
    | ReceiptEvent
    | TypingEvent
    | FriendEvent
    | PushEvent
    | ResyncEvent,
    Field(discriminator="kind"),
]
"""Everything the server publishes to ``user/{uid}/inbox``, told apart by ``kind``."""


def error_event(conversation_id: int | None, cmid: str | None, error: MessageRejected) -> bytes:
    """The ``error`` inbox event for the sending device; ``error.code`` must be one of ``ERROR_CODES``."""
    if error.code not in ERROR_CODES:
        raise ValueError(f"{error.code!r} is not an error code of the contract ({sorted(ERROR_CODES)})")
    event: ErrorEvent = {
        "kind": "error",
        "conversation_id": None if conversation_id is None else str(conversation_id),
        "cmid": cmid,
        "code": error.code,  # type: ignore[typeddict-item] # checked against ERROR_CODES above
        "message": error.message,
    }
    if error.retry_after_ms is not None:
        event["retry_after_ms"] = error.retry_after_ms
    return orjson.dumps(event)


_RESYNC: ResyncEvent = {"kind": "resync"}
_RESYNC_JSON = orjson.dumps(_RESYNC)


def resync_event() -> bytes:
    """The ``resync`` inbox event (always the same bytes: a node sends it to every user it holds)."""
    return _RESYNC_JSON


@functools.cache
def inbox_event_adapter() -> TypeAdapter[Any]:
    """Validates and describes (``json_schema``) every inbox event; built once, on first use."""
    return TypeAdapter(InboxEvent)


@functools.cache
def presence_adapter() -> TypeAdapter[Presence]:
    """Validates and describes the presence payload; built once, on first use."""
    return TypeAdapter(Presence)


def parse_inbox_event(payload: bytes | bytearray) -> InboxEvent:
    """An inbox event from its JSON; raises ``pydantic.ValidationError`` if it breaks the contract."""
    event: InboxEvent = inbox_event_adapter().validate_json(payload, strict=True)
    return event


def parse_presence(payload: bytes | bytearray) -> Presence:
    """A presence payload from its JSON; raises ``pydantic.ValidationError`` if it breaks the contract."""
    return presence_adapter().validate_json(payload, strict=True)
