"""Topic ACL for SUBSCRIBE: who may subscribe where (DESIGN.md, "Topics").

- a device subscribes only to its own user's inbox, and to the presence of itself, its
  friends and the members of its conversations (no wildcards);
- services may subscribe anywhere.

A refused SUBSCRIBE gets SUBACK 0x80. Publishing needs no ACL lookup: the broker hands a
device's ``conv/{cid}/send`` and ``conv/{cid}/typing`` to the messaging core (which checks
membership) and refuses every other device publish (``broker.py``). Deliveries need none
either: subscriptions were checked when made.
"""

from __future__ import annotations

import logging

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

    async def may_subscribe(self, session: MqttSession, topic_filter: str) -> bool:
        """Whether ``session`` may subscribe to ``topic_filter``."""
        user_id = session.user_id
        if user_id is None:
            return True  # a service
        parsed = topics.parse(topic_filter)
        if parsed is None:
            allowed = False
        elif parsed.kind is TopicKind.INBOX:
            allowed = parsed.entity_id == user_id
        elif parsed.kind is TopicKind.PRESENCE:
            allowed = await self._relations.can_see_presence(user_id, parsed.entity_id)
        else:
            allowed = False
        if not allowed:
            logger.info("refused SUBSCRIBE to %r by device_id=%s", topic_filter, session.client_id)
        return allowed
