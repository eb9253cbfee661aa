from __future__ import annotations

from typing import get_args, get_type_hints

import orjson
import pytest
from pydantic import ValidationError

from hubbub import events
from hubbub.envelope import CommittedMessage, format_time
from hubbub.errors import MessageRejected

MESSAGE = CommittedMessage(1 << 62, (1 << 62) + 1, 7, 42, "c", "hi", 1_764_000_000_123)
CONVERSATION: events.ConversationInfo = {
    "id": "5",
    "type": "group",
    "title": "team",
    "members": [{"user_id": "42", "username": "ann", "display_name": "Ann", "role": "admin"}],
    "created_at": format_time(1_764_000_000_123),
}


def test_events_carry_ids_as_strings() -> None:
    event = orjson.loads(events.message_event(MESSAGE))
    assert event == {
        "kind": "message",
        "conversation_id": str(1 << 62),
        "message_id": str((1 << 62) + 1),
        "seq": 7,
        "sender_id": "42",
        "cmid": "c",
        "text": "hi",
        "created_at": format_time(1_764_000_000_123),
    }
    assert event == {"kind": "message", **events.message_json(MESSAGE)}
    assert orjson.loads(events.ack_event(MESSAGE))["message_id"] == str((1 << 62) + 1)


BUILT = {
    "message": events.message_event(MESSAGE),
    "ack": events.ack_event(MESSAGE),
    "error": events.error_event(None, None, MessageRejected("invalid", "payload is not JSON")),
    "typing": events.typing_event(5, 42),
    "receipt": events.receipt_event(5, 42, 7),
    "friend": events.friend_event("requested", 42),
    "conversation": events.conversation_event("member_added", CONVERSATION, by=42, user_id=43),
    "push": events.push_register_again_event(),
    "resync": events.resync_event(),
}


def test_every_inbox_event_kind_has_a_builder_whose_output_parses_as_its_type() -> None:
    union = get_args(events.InboxEvent)[0]
    kinds = {get_args(get_type_hints(shape)["kind"])[0] for shape in get_args(union)}
    assert set(BUILT) == kinds
    for kind, payload in BUILT.items():
        parsed = events.parse_inbox_event(payload)
        assert parsed["kind"] == kind
        assert parsed == orjson.loads(payload)


@pytest.mark.parametrize("code", sorted(events.ERROR_CODES))
def test_every_error_code_builds_an_error_event(code: str) -> None:
    event = events.parse_inbox_event(events.error_event(9, "c-1", MessageRejected(code, "why")))
    assert event == {"kind": "error", "conversation_id": "9", "cmid": "c-1", "code": code, "message": "why"}


def test_an_error_code_outside_the_contract_is_refused_where_it_is_built() -> None:
    with pytest.raises(ValueError, match="not an error code"):
        events.error_event(9, "c-1", MessageRejected("made_up", "why"))


def test_the_presence_payload_parses_as_its_type() -> None:
    online = events.parse_presence(events.presence_payload(42, online=True, last_active_ms=1_764_000_000_123))
    assert online == {"user_id": "42", "status": "online", "last_active_at": "2025-11-24T16:00:00.123Z"}
    never = events.parse_presence(events.presence_payload(42, online=False, last_active_ms=None))
    assert never["last_active_at"] is None


@pytest.mark.parametrize(
    "payload",
    [
        b'{"kind": "mystery"}',
        b'{"kind": "typing", "conversation_id": "5"}',
        b'{"kind": "typing", "conversation_id": "5", "user_id": "42", "extra": 1}',
        b'{"kind": "typing", "conversation_id": 5, "user_id": "42"}',
        b'{"kind": "receipt", "conversation_id": "5", "user_id": "42", "seq": "7"}',
        b'{"kind": "error", "conversation_id": null, "cmid": null, "code": "oops", "message": ""}',
    ],
)
def test_parsing_refuses_what_breaks_the_contract(payload: bytes) -> None:
    with pytest.raises(ValidationError):
        events.parse_inbox_event(payload)
