"""Topic ACL for SUBSCRIBE: who may subscribe where (DESIGN.md, "Topics").

- a device subscribes only to its own user's inbox, and to the presence of itself, its
  friends and the members of its conversations (no wildcards);
- services may subscribe anywhere.

A refused SUBSCRIBE gets SUBACK 0x80. Publishing needs no ACL lookup: the broker hands a
device's ``conv/{cid}/send`` and ``conv/{cid}/typing`` to the messaging core (which checks
membership) and refuses every other device publish (``broker.py``). Deliveries need none
either: subscriptions were checked when made.

Only a presence topic of another user needs the directory; every other answer is known at
once, so ``check`` gives it without a coroutine and a device's SUBSCRIBE to its inbox is
answered within the turn of the event loop that read it (no task, reading never paused).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from broker_plugins.sessions import MqttSession
from hubbub import topics
from hubbub.stores import Directory
from hubbub.topics import TopicKind

__all__ = ["TopicAcl"]

logger = logging.getLogger(__name__)


class TopicAcl:
    """Applies the rules above, asking the ``Directory`` who may see whose presence."""

    def __init__(self, relations: Directory) -> None:
        self._relations = relations

    def check(self, session: MqttSession, topic_filter: str) -> bool | Awaitable[bool]:
        """Whether ``session`` may subscribe to ``topic_filter``: at once, or once the directory answered."""
        user_id = session.user_id
        if user_id is None:
            return True  # a service
        if topic_filter in (topics.inbox(user_id), topics.presence(user_id)):
            return True  # what every device subscribes to on connecting: its own, known without parsing
        parsed = topics.parse(topic_filter)
        if parsed is not None and parsed.kind is TopicKind.PRESENCE and parsed.entity_id != user_id:
            return self._may_see_presence(session, topic_filter, user_id, parsed.entity_id)
        allowed = (
            parsed is not None
            and parsed.kind in {TopicKind.INBOX, TopicKind.PRESENCE}
            and parsed.entity_id == user_id
        )
        if not allowed:
            _refused(session, topic_filter)
        return allowed

    async def _may_see_presence(
        self, session: MqttSession, topic_filter: str, viewer_id: int, subject_id: int
    ) -> bool:
        allowed = await self._relations.can_see_presence(viewer_id, subject_id)
        if not allowed:
            _refused(session, topic_filter)
        return allowed


def _refused(session: MqttSession, topic_filter: str) -> None:
    logger.info("refused SUBSCRIBE to %r by device_id=%s", topic_filter, session.client_id)
