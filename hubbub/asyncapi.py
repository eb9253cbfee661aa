"""The MQTT contract as an AsyncAPI 3.0 document, generated from the types in ``hubbub.events``.

The document describes one *device* (a phone app, a browser tab): its ``send`` operations are
what a device publishes, its ``receive`` operations what it subscribes to. Every payload schema
comes from the ``TypedDict`` that the server's own builders fill, and every example is the
output of those builders, so nothing here is written twice by hand.

Pure: ``build_asyncapi`` returns a dict. The API serves it (``/asyncapi.json``), and
``python -m launcher.asyncapi`` writes ``docs/asyncapi.json`` for the default settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import TypeAdapter

from hubbub import events
from hubbub.envelope import MAX_CMID_LENGTH, CommittedMessage
from hubbub.errors import MessageRejected

__all__ = ["ASYNCAPI_VERSION", "ERROR_MEANINGS", "INBOX_KINDS", "build_asyncapi", "inbox_message_name"]

ASYNCAPI_VERSION = "3.0.0"
_MQTT_BINDING = "0.2.0"
_REF = "#/components/schemas/{model}"

ERROR_MEANINGS: Mapping[str, str] = {
    "invalid": (
        'The payload is not `{"cmid", "text"}` JSON (UTF-8), or the cmid is not 1 to 64 characters; '
        "or the publish went to a `conv/` topic that is neither `conv/{id}/send` nor `conv/{id}/typing` "
        "(`conversation_id` and `cmid` are then null)."
    ),
    "empty": "The text is empty or only white space.",
    "too_long": "The text has more characters (code points) than the limit.",
    "not_member": "The sender is not a member of the conversation (or it does not exist).",
    "rate_limited": "The device sends too fast: keep the message in the outbox and resend it later.",
    "unavailable": (
        "The message was accepted but the store could not commit it (e.g. a full disk); nothing was"
        " stored. Keep it in the outbox and resend it, same `cmid`, after `retry_after_ms`."
    ),
}
"""What each ``error`` code means, for the document (a test checks every code has one)."""

INBOX_KINDS: Mapping[str, type] = {
    "message": events.MessageEvent,
    "ack": events.AckEvent,
    "error": events.ErrorEvent,
    "conversation": events.ConversationEvent,
    "receipt": events.ReceiptEvent,
    "typing": events.TypingEvent,
    "friend": events.FriendEvent,
    "push": events.PushEvent,
    "resync": events.ResyncEvent,
}
"""Every ``kind`` of inbox event, with its type (a test checks this matches ``events.InboxEvent``)."""

_SAMPLE = CommittedMessage(
    conversation_id=7_404_159_622_389_760_001,
    message_id=7_404_159_622_389_760_777,
    seq=42,
    sender_id=7_404_159_622_389_760_002,
    cmid="0b5a1f1e-4d0c-4f5e-9a57-3f9d3c1e2b11",
    text="See you at 8?",
    created_at_ms=1_764_000_000_123,
)
_CONVERSATION: events.ConversationInfo = {
    "id": str(_SAMPLE.conversation_id),
    "type": "group",
    "title": "Climbing",
    "members": [
        {
            "user_id": str(_SAMPLE.sender_id),
            "username": "ann",
            "display_name": "Ann",
            "role": "admin",
        },
        {"user_id": "7404159622389760003", "username": "bob", "display_name": "Bob", "role": "member"},
    ],
    "created_at": "2025-11-24T15:58:12.004Z",
}
_BOB = 7_404_159_622_389_760_003


def inbox_message_name(kind: str) -> str:
    """The name of the document's message for an inbox event of ``kind`` (``message`` -> ``messageEvent``)."""
    return f"{kind}Event"


def _example(name: str, payload: bytes, summary: str | None = None) -> dict[str, Any]:
    example: dict[str, Any] = {"name": name, "payload": orjson.loads(payload)}
    if summary:
        example["summary"] = summary
    return example


_INBOX_EXAMPLES: Mapping[str, Callable[[], list[dict[str, Any]]]] = {
    "message": lambda: [_example("message", events.message_event(_SAMPLE))],
    "ack": lambda: [_example("ack", events.ack_event(_SAMPLE))],
    "error": lambda: [
        _example(
            code,
            events.error_event(_SAMPLE.conversation_id, _SAMPLE.cmid, MessageRejected(code, meaning)),
            meaning,
        )
        for code, meaning in ERROR_MEANINGS.items()
    ],
    "conversation": lambda: [
        _example(
            "member_added",
            events.conversation_event("member_added", _CONVERSATION, by=_SAMPLE.sender_id, user_id=_BOB),
        ),
        _example("renamed", events.conversation_event("renamed", _CONVERSATION, by=_SAMPLE.sender_id)),
    ],
    "receipt": lambda: [_example("receipt", events.receipt_event(_SAMPLE.conversation_id, _BOB, 42))],
    "typing": lambda: [_example("typing", events.typing_event(_SAMPLE.conversation_id, _BOB))],
    "friend": lambda: [_example("requested", events.friend_event("requested", _BOB))],
    "push": lambda: [_example("register_again", events.push_register_again_event())],
    "resync": lambda: [_example("resync", events.resync_event())],
}


def _schemas(max_message_chars: int) -> dict[str, Any]:
    """Every payload's JSON Schema, keyed by type name, with refs into ``#/components/schemas``."""
    adapters: list[tuple[str, Literal["validation"], TypeAdapter[Any]]] = [
        (name, "validation", TypeAdapter(shape)) for name, shape in INBOX_KINDS.items()
    ]
    adapters += [
        ("send", "validation", TypeAdapter(events.SendPayload)),
        ("typing_notice", "validation", TypeAdapter(events.TypingNotice)),
        ("presence", "validation", events.presence_adapter()),
    ]
    _, generated = TypeAdapter.json_schemas(adapters, ref_template=_REF)
    schemas: dict[str, Any] = generated["$defs"]
    schemas["SendPayload"]["properties"]["text"]["maxLength"] = max_message_chars
    return dict(sorted(schemas.items()))


def _ref(schema: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=schema)}


def _messages(max_message_chars: int) -> dict[str, Any]:
    messages: dict[str, Any] = {
        "sendRequest": {
            "name": "sendRequest",
            "title": "Send a text message",
            "summary": "Published with QoS 1; kept in the device's outbox until its `ack` arrives.",
            "description": (
                f"`text` holds 1 to {max_message_chars} characters (code points; the server's "
                f"`max_message_chars`), `cmid` 1 to {MAX_CMID_LENGTH}. Resend with the same `cmid` "
                "after a reconnect: a message already stored is answered with its original `ack`."
            ),
            "payload": _ref("SendPayload"),
            "examples": [{"name": "send", "payload": {"cmid": _SAMPLE.cmid, "text": _SAMPLE.text}}],
        },
        "typingNotice": {
            "name": "typingNotice",
            "title": "I am typing",
            "summary": "At most one every few seconds; extra ones are dropped, never answered.",
            "payload": _ref("TypingNotice"),
            "examples": [{"name": "typing", "payload": {}}],
        },
        "presence": {
            "name": "presence",
            "title": "A user's presence",
            "summary": "Retained: a new subscriber gets the current state at once.",
            "payload": _ref("Presence"),
            "examples": [
                _example(
                    "online", events.presence_payload(_BOB, online=True, last_active_ms=1_764_000_000_123)
                ),
                _example("never seen", events.presence_payload(_BOB, online=False, last_active_ms=None)),
            ],
        },
    }
    for kind, shape in INBOX_KINDS.items():
        messages[inbox_message_name(kind)] = {
            "name": inbox_message_name(kind),
            "title": f"`{kind}` event",
            "summary": (shape.__doc__ or "").strip().splitlines()[0],
            "payload": _ref(shape.__name__),
            "examples": _INBOX_EXAMPLES[kind](),
        }
    messages[inbox_message_name("error")]["description"] = "Codes: " + "; ".join(
        f"`{code}`: {meaning}" for code, meaning in ERROR_MEANINGS.items()
    )
    return messages


_CHANNELS: dict[str, Any] = {
    "conversationSend": {
        "address": "conv/{conversation_id}/send",
        "title": "Send to a conversation",
        "description": "A member's device publishes messages here. Nobody subscribes: the server "
        "ingests them and answers on the sender's inbox (`ack` or `error`).",
        "parameters": {"conversation_id": {"description": "The conversation's id (decimal)."}},
        "messages": {"sendRequest": {"$ref": "#/components/messages/sendRequest"}},
        "x-hubbub-publishers": "a device of a member of the conversation",
        "x-hubbub-subscribers": "nobody (a SUBSCRIBE is refused)",
    },
    "conversationTyping": {
        "address": "conv/{conversation_id}/typing",
        "title": "Typing in a conversation",
        "description": "A member's device says its user is typing; the other members get a `typing` "
        "event on their inboxes. Nothing is stored.",
        "parameters": {"conversation_id": {"description": "The conversation's id (decimal)."}},
        "messages": {"typingNotice": {"$ref": "#/components/messages/typingNotice"}},
        "x-hubbub-publishers": "a device of a member of the conversation",
        "x-hubbub-subscribers": "nobody (a SUBSCRIBE is refused)",
    },
    "inbox": {
        "address": "user/{user_id}/inbox",
        "title": "A user's inbox",
        "description": "Every event for one user, told apart by `kind`: one subscription however many "
        "conversations the user is in. Only committed messages arrive; `seq` is dense per "
        "conversation, so a device can tell a gap (it holds 41 and 43) from silence and fill it "
        "from history.",
        "parameters": {"user_id": {"description": "The user's id (decimal): the MQTT username."}},
        "x-hubbub-publishers": "the server only",
        "x-hubbub-subscribers": "the devices of this user",
    },
    "presence": {
        "address": "presence/{user_id}",
        "title": "A user's presence",
        "description": "Online while any device of the user is connected; offline after a grace "
        "period once the last one leaves. Retained.",
        "parameters": {"user_id": {"description": "The user's id (decimal)."}},
        "messages": {"presence": {"$ref": "#/components/messages/presence"}},
        "x-hubbub-publishers": "the server only (retained)",
        "x-hubbub-subscribers": "the user, the user's friends, and members of a conversation with the user",
    },
}


def _operations() -> dict[str, Any]:
    def mqtt(qos: int, *, retain: bool = False) -> dict[str, Any]:
        return {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": _MQTT_BINDING}}

    inbox_messages = [
        {"$ref": f"#/channels/inbox/messages/{inbox_message_name(kind)}"} for kind in INBOX_KINDS
    ]
    return {
        "sendMessage": {
            "action": "send",
            "channel": {"$ref": "#/channels/conversationSend"},
            "title": "Send a message",
            "description": "Publish with QoS 1. The PUBACK means the server has it, not that it is "
            "stored: keep the message in the outbox until the `ack` with its `cmid` arrives.",
            "messages": [{"$ref": "#/channels/conversationSend/messages/sendRequest"}],
            "bindings": mqtt(1),
        },
        "sendTyping": {
            "action": "send",
            "channel": {"$ref": "#/channels/conversationTyping"},
            "title": "Say the user is typing",
            "description": "QoS 0 is enough: a typing notice is a hint.",
            "messages": [{"$ref": "#/channels/conversationTyping/messages/typingNotice"}],
            "bindings": mqtt(0),
        },
        "receiveInbox": {
            "action": "receive",
            "channel": {"$ref": "#/channels/inbox"},
            "title": "Receive the user's events",
            "description": "Subscribe with QoS 1 right after every CONNACK (with a clean session the "
            "subscription does not survive a disconnect). The server publishes at QoS 1.",
            "messages": inbox_messages,
            "bindings": mqtt(1),
        },
        "receivePresence": {
            "action": "receive",
            "channel": {"$ref": "#/channels/presence"},
            "title": "Follow a user's presence",
            "description": "Subscribe to the friends and co-members shown on screen; others are refused "
            "(SUBACK 0x80).",
            "messages": [{"$ref": "#/channels/presence/messages/presence"}],
            "bindings": mqtt(1, retain=True),
        },
    }


def _servers(mqtt_host: str, mqtt_port: int, ws_url: str) -> dict[str, Any]:
    ws = urlsplit(ws_url)
    security = [{"$ref": "#/components/securitySchemes/accessToken"}]
    bindings = {
        "mqtt": {
            "clientId": "the device_id of the login",
            "cleanSession": True,
            "keepAlive": 30,
            "bindingVersion": _MQTT_BINDING,
        }
    }
    return {
        "tcp": {
            "host": f"{mqtt_host}:{mqtt_port}",
            "protocol": "mqtt",
            "protocolVersion": "3.1.1",
            "title": "MQTT over TCP (apps)",
            "description": "The endpoint a login answers in `mqtt.host` and `mqtt.port`.",
            "security": security,
            "bindings": bindings,
        },
        "websocket": {
            "host": ws.netloc,
            "pathname": ws.path or "/",
            "protocol": "ws",
            "protocolVersion": "3.1.1",
            "title": "MQTT over WebSocket (browsers)",
            "description": "The endpoint a login answers in `mqtt.ws_url` (subprotocol `mqtt`).",
            "security": security,
            "bindings": bindings,
        },
    }


_DESCRIPTION = """\
The MQTT half of Hubbub, as one device sees it (the REST half is the OpenAPI document at `/docs`).

1. Log in over REST: `POST /v1/auth/token` returns `user_id`, `device_id`, an `access_token`
   (short-lived), a `refresh_token` and the broker endpoints.
2. CONNECT with client id = `device_id`, username = `user_id`, password = `access_token`.
3. Subscribe to `user/{user_id}/inbox` (QoS 1) after every CONNACK, then catch up with
   `GET /v1/sync`; catch up the same way on a `resync` event (the node lost events for you).
4. Publish `{"cmid", "text"}` to `conv/{conversation_id}/send` with QoS 1 and keep it in an
   outbox until its `ack` arrives; resend with the same `cmid` after a reconnect.

Every id in JSON is a decimal string (64-bit ids do not fit JavaScript numbers); `seq` is a
number. Times are ISO 8601 UTC with milliseconds. Ignore event kinds you do not know: new ones
may be added. The client guide is `docs/clients.md`.
"""


def build_asyncapi(
    *, version: str, max_message_chars: int, mqtt_host: str, mqtt_port: int, ws_url: str
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the device-facing MQTT contract, as a JSON-ready dict."""
    messages = _messages(max_message_chars)
    channels = {name: dict(channel) for name, channel in _CHANNELS.items()}
    channels["inbox"]["messages"] = {
        inbox_message_name(kind): {"$ref": f"#/components/messages/{inbox_message_name(kind)}"}
        for kind in INBOX_KINDS
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Hubbub MQTT",
            "version": version,
            "description": _DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "servers": _servers(mqtt_host, mqtt_port, ws_url),
        "channels": channels,
        "operations": _operations(),
        "components": {
            "schemas": _schemas(max_message_chars),
            "messages": messages,
            "securitySchemes": {
                "accessToken": {
                    "type": "userPassword",
                    "description": "Username: the `user_id`. Password: the `access_token` of a login "
                    "(`POST /v1/auth/token`), bound to that login's `device_id`, which must be the "
                    "client id. An expired token is refused with CONNACK 5: refresh "
                    "(`POST /v1/auth/refresh`) and connect again.",
                }
            },
        },
    }
