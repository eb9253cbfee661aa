from __future__ import annotations

import pytest

from hubbub import topics
from hubbub.topics import ParsedTopic, TopicKind


def test_builders_and_parser_agree() -> None:
    assert topics.parse(topics.inbox(42)) == ParsedTopic(TopicKind.INBOX, 42)
    assert topics.parse(topics.conversation_send(7)) == ParsedTopic(TopicKind.CONVERSATION_SEND, 7)
    assert topics.parse(topics.conversation_typing(7)) == ParsedTopic(TopicKind.CONVERSATION_TYPING, 7)
    assert topics.parse(topics.presence(9)) == ParsedTopic(TopicKind.PRESENCE, 9)
    assert topics.parse("$hubbub/accepted") == ParsedTopic(TopicKind.INTERNAL, 0)


@pytest.mark.parametrize(
    "topic",
    [
        "user/+/inbox",
        "conv/#",
        "conv/01/send",
        "conv/-1/send",
        "conv/1/send/x",
        "user/1/outbox",
        "presence/",
        "conv/99999999999999999999/send",
        "conv/\uff11/send",
        "",
    ],
)
def test_anything_else_does_not_parse(topic: str) -> None:
    assert topics.parse(topic) is None
