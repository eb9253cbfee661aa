"""Topic ACL: who may subscribe and publish where (DESIGN.md, "Topics").

- a device subscribes only to its own user's inbox, and to the presence of itself, its
  friends and the members of its conversations;
- a device publishes only to ``conv/{cid}/send`` (membership is checked by ingest, which
  answers a non-member with an ``error`` event) and ``conv/{cid}/typing``;
- nobody else may subscribe to ``conv/+/send``; ``$hubbub/...`` is for services only.

A refused SUBSCRIBE gets SUBACK 0x80; a refused PUBLISH is dropped and logged by amqtt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import Session

from broker_plugins.auth import SERVICE_USERNAME_PREFIX
from hubbub import topics
from hubbub.stores import Directory
from hubbub.topics import TopicKind

__all__ = ["TopicAclPlugin", "may_publish", "may_subscribe"]

logger = logging.getLogger(__name__)

_DEVICE_PUBLISHES = frozenset({TopicKind.CONVERSATION_SEND, TopicKind.CONVERSATION_TYPING})


async def may_subscribe(user_id: int, topic_filter: str, relations: Directory) -> bool:
    """Whether a device of ``user_id`` may subscribe to ``topic_filter`` (no wildcards allowed)."""
    parsed = topics.parse(topic_filter)
    if parsed is None:
        return False
    if parsed.kind is TopicKind.INBOX:
        return parsed.entity_id == user_id
    if parsed.kind is TopicKind.PRESENCE:
        return await relations.can_see_presence(user_id, parsed.entity_id)
    return False


def may_publish(topic: str) -> bool:
    """Whether a device may publish to ``topic`` at all (membership is checked later)."""
    parsed = topics.parse(topic)
    return parsed is not None and parsed.kind in _DEVICE_PUBLISHES


class TopicAclPlugin(BaseTopicPlugin):
    """Applies the rules above; service accounts may use any topic."""

    @dataclass
    class Config:
        """``relations``: the ``Directory`` answering who may see whose presence."""

        relations: Any = None

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        """True when ``session`` may perform ``action`` on ``topic``."""
        if session is None or topic is None or not session.username:
            return False
        if session.username.startswith(SERVICE_USERNAME_PREFIX):
            return True
        if action == Action.SUBSCRIBE:
            allowed = session.username.isdigit() and await may_subscribe(
                int(session.username), topic, self.config.relations
            )
        elif action == Action.PUBLISH:
            allowed = may_publish(topic)
        else:
            # RECEIVE: subscriptions were checked when made; the inbox is the user's own.
            allowed = True
        if not allowed:
            logger.info("refused %s of %r by device_id=%s", action, topic, session.client_id)
        return allowed
