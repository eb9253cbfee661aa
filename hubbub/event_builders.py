"""The bytes of every event the server sends a device: the builders of ``hubbub.events``' shapes.

Why a module apart from the shapes: these run for every message (a ``message`` and an ``ack``
per message, built together; a presence payload per change; history's JSON per message), so
they are compiled with mypyc (``build_compiled.py``). The shapes they fill are ``hubbub.events``'
``TypedDict``s, which carry pydantic's constraints for the published contract and which mypyc
cannot compile (it would make them ``typing.TypedDict``, which pydantic refuses on Python 3.11):
they are imported here for type checking only, so mypy checks every builder against the
contract, and at run time a builder fills a plain dict and hands it to orjson, validating
nothing. ``hubbub.events`` re-exports every builder, so the contract is still read in one place.
(``error_event`` stays there: it checks its code against the contract's codes at run time.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from hubbub.envelope import CommittedMessage, format_time

if TYPE_CHECKING:
    from hubbub.events import (
        AckEvent,
        ConversationAction,
        ConversationEvent,
        ConversationInfo,
        FriendAction,
        FriendEvent,
        MessageEvent,
        MessageJson,
        Presence,
        PushEvent,
        ReceiptEvent,
        TypingEvent,
    )

__all__ = [
    "ack_event",
    "conversation_event",
    "delivery_events",
    "friend_event",
    "message_event",
    "message_json",
    "presence_payload",
    "push_register_again_event",
    "receipt_event",
    "typing_event",
]


def message_json(message: CommittedMessage) -> MessageJson:
    """The JSON shape of a committed message, as history returns it."""
    return {
        "conversation_id": str(message.conversation_id),
        "message_id": str(message.message_id),
        "seq": message.seq,
        "sender_id": str(message.sender_id),
        "cmid": message.cmid,
        "text": message.text,
        "created_at": format_time(message.created_at_ms),
    }


def message_event(message: CommittedMessage) -> bytes:
    """The ``message`` inbox event, delivered to every member's devices."""
    return delivery_events(message)[0]


def ack_event(message: CommittedMessage) -> bytes:
    """The ``ack`` inbox event for the sender's devices: ``cmid`` is stored as ``message_id``/``seq``."""
    return delivery_events(message)[1]


def delivery_events(message: CommittedMessage) -> tuple[bytes, bytes]:
    """A new message's ``message`` event and its ``ack``, the fields they share formatted once.

    The fan-out needs both for every new message, so they are built together.
    """
    conversation_id = str(message.conversation_id)
    message_id = str(message.message_id)
    created_at = format_time(message.created_at_ms)
    event: MessageEvent = {
        "kind": "message",
        "conversation_id": conversation_id,
        "message_id": message_id,
        "seq": message.seq,
        "sender_id": str(message.sender_id),
        "cmid": message.cmid,
        "text": message.text,
        "created_at": created_at,
    }
    ack: AckEvent = {
        "kind": "ack",
        "conversation_id": conversation_id,
        "cmid": message.cmid,
        "message_id": message_id,
        "seq": message.seq,
        "created_at": created_at,
    }
    return orjson.dumps(event), orjson.dumps(ack)


def typing_event(conversation_id: int, user_id: int) -> bytes:
    """The ``typing`` inbox event for the other members (never stored)."""
    event: TypingEvent = {"kind": "typing", "conversation_id": str(conversation_id), "user_id": str(user_id)}
    return orjson.dumps(event)


def receipt_event(conversation_id: int, user_id: int, seq: int) -> bytes:
    """The ``receipt`` inbox event: ``user_id`` read ``conversation_id`` up to ``seq``."""
    event: ReceiptEvent = {
        "kind": "receipt",
        "conversation_id": str(conversation_id),
        "user_id": str(user_id),
        "seq": seq,
    }
    return orjson.dumps(event)


def friend_event(action: FriendAction, user_id: int) -> bytes:
    """The ``friend`` inbox event: the friendship with ``user_id`` was ``action``."""
    event: FriendEvent = {"kind": "friend", "action": action, "user_id": str(user_id)}
    return orjson.dumps(event)


def conversation_event(
    action: ConversationAction, conversation: ConversationInfo, *, by: int, user_id: int | None = None
) -> bytes:
    """The ``conversation`` inbox event: what changed, by whom, and the conversation now."""
    event: ConversationEvent = {
        "kind": "conversation",
        "action": action,
        "by": str(by),
        "user_id": None if user_id is None else str(user_id),
        "conversation": conversation,
    }
    return orjson.dumps(event)


def push_register_again_event() -> bytes:
    """Tells a device its push token was rejected for good: register a fresh one."""
    event: PushEvent = {"kind": "push", "action": "register_again"}
    return orjson.dumps(event)


def presence_payload(user_id: int, *, online: bool, last_active_ms: int | None) -> bytes:
    """The retained ``presence/{uid}`` payload."""
    presence: Presence = {
        "user_id": str(user_id),
        "status": "online" if online else "offline",
        "last_active_at": None if last_active_ms is None else format_time(last_active_ms),
    }
    # Copied: orjson's result sits in a 4 KB allocation, and this one is retained per user.
    return bytes(memoryview(orjson.dumps(presence)))
