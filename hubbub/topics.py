"""Every MQTT topic name Hubbub uses: built and parsed here and nowhere else.

IDs appear in topics as the decimal strings of their 64-bit values, as they do in JSON.

``inbox`` and ``parse`` run for every message (each event goes to an inbox; each send's topic
is parsed), so both remember their answers for the topics in use: a dict lookup instead of
formatting, splitting and building anew. The memories are bounded (emptied when full), and
``parse`` remembers only topics it recognised, so garbage topics cannot crowd them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from hubbub.ids import parse_id

__all__ = [
    "CONVERSATION_PREFIX",
    "INTERNAL_PREFIX",
    "PRESENCE_PREFIX",
    "ParsedTopic",
    "TopicKind",
    "conversation_send",
    "conversation_typing",
    "every_presence",
    "inbox",
    "parse",
    "presence",
]

INTERNAL_PREFIX = "$hubbub/"
CONVERSATION_PREFIX = "conv/"  # a cheap first test on the publish path, before parsing
PRESENCE_PREFIX = "presence/"  # the same on the subscribe path


class TopicKind(Enum):
    """What a topic is for."""

    CONVERSATION_SEND = "conversation_send"
    CONVERSATION_TYPING = "conversation_typing"
    INBOX = "inbox"
    PRESENCE = "presence"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A recognised topic; ``entity_id`` is the conversation or user id it names (0 for internal)."""

    kind: TopicKind
    entity_id: int


_MEMORY_LIMIT = 20_000  # topics remembered by ``inbox`` and by ``parse``, each
_INBOXES: dict[int, str] = {}


def inbox(user_id: int) -> str:
    """Topic where the server delivers every event for ``user_id``'s devices."""
    topic = _INBOXES.get(user_id)
    if topic is None:
        if len(_INBOXES) >= _MEMORY_LIMIT:
            _INBOXES.clear()
        topic = _INBOXES[user_id] = f"user/{user_id}/inbox"
    return topic


def conversation_send(conversation_id: int) -> str:
    """Topic a member's device publishes a message to."""
    return f"conv/{conversation_id}/send"


def conversation_typing(conversation_id: int) -> str:
    """Topic a member's device publishes typing notices to."""
    return f"conv/{conversation_id}/typing"


def presence(user_id: int) -> str:
    """Retained topic carrying ``user_id``'s aggregated presence."""
    return f"{PRESENCE_PREFIX}{user_id}"


def every_presence() -> str:
    """The filter matching every user's presence (services: monitoring, the presence benchmark)."""
    return "presence/+"


_BY_SHAPE: dict[tuple[str, str], TopicKind] = {
    ("conv", "send"): TopicKind.CONVERSATION_SEND,
    ("conv", "typing"): TopicKind.CONVERSATION_TYPING,
    ("user", "inbox"): TopicKind.INBOX,
}


_PARSED: dict[str, ParsedTopic] = {}


def parse(topic: str) -> ParsedTopic | None:
    """Recognise a concrete topic name; ``None`` for anything Hubbub does not define.

    Wildcard filters are not topics and never parse.
    """
    parsed = _PARSED.get(topic)
    if parsed is None:
        parsed = _parse(topic)
        if parsed is not None:
            if len(_PARSED) >= _MEMORY_LIMIT:
                _PARSED.clear()
            _PARSED[topic] = parsed
    return parsed


def _parse(topic: str) -> ParsedTopic | None:
    if topic.startswith(INTERNAL_PREFIX):
        return ParsedTopic(TopicKind.INTERNAL, 0)
    parts = topic.split("/")
    if len(parts) == 2 and parts[0] == "presence":  # noqa: PLR2004 - presence/{uid}
        user_id = parse_id(parts[1])
        return None if user_id is None else ParsedTopic(TopicKind.PRESENCE, user_id)
    if len(parts) != 3:  # noqa: PLR2004 - every other topic is prefix/{id}/suffix
        return None
    kind = _BY_SHAPE.get((parts[0], parts[2]))
    entity_id = parse_id(parts[1])
    if kind is None or entity_id is None:
        return None
    return ParsedTopic(kind, entity_id)
