"""Routing: sessions, subscriptions, retained messages, and delivery in time proportional to recipients.

What this does differently from amqtt 0.12.1's ``Broker`` (whose routing it replaces
entirely; every rule has a test in ``tests/broker_plugins/test_protocol_*.py`` /
``test_subscriptions.py``):

- ``route`` looks the topic up in the ``SubscriptionIndex`` and writes to each recipient at
  once (``publish_nowait``): amqtt tested every message against every filter on the node,
  asked the ACL plugins about every recipient and started a task per delivery.
  Subscriptions were authorised when made, so there is no per-recipient ACL call.
- the QoS of a delivery is min(publish QoS, subscription QoS) [MQTT-3.8.4-6]; stock
  amqtt used the subscription's.
- a repeated SUBSCRIBE replaces the QoS [MQTT-3.8.4-3]; ending a session costs O(its
  filters), not O(all filters); a CONNECT walks no filters at all.
- retained messages: a zero-byte retained PUBLISH of any QoS clears the topic and is not
  stored [MQTT-3.3.1-10/11]; retained messages go to a new subscription only
  [MQTT-3.3.1-6], at min(retained QoS, granted QoS).
- messages for a disconnected persistent session (QoS 1/2) are queued and sent, in order,
  on its return; unacknowledged ones are resent with DUP (``handler.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from broker_plugins.acl import TopicAcl
from broker_plugins.codec import encode_publish
from broker_plugins.handler import ConnectionHandler
from broker_plugins.metrics import BrokerCollector, ShedCounts
from broker_plugins.router import ProtocolViolation
from broker_plugins.sessions import MqttSession, Outgoing, Will
from broker_plugins.subscriptions import SubscriptionIndex, is_valid_filter, matches

__all__ = ["REFUSED", "RoutingBroker"]

logger = logging.getLogger(__name__)

REFUSED = 0x80


class RoutingBroker:
    """Sessions by client id, the subscription index and the retained messages; ``route`` delivers."""

    def __init__(self, acl: TopicAcl) -> None:
        self._acl = acl
        self.sessions: dict[str, MqttSession] = {}
        self.index = SubscriptionIndex()
        self.retained: dict[str, tuple[bytes, int]] = {}  # topic -> (payload, QoS)
        self.shed = ShedCounts()  # what was dropped rather than buffered (``metrics.py``)

    # --- delivery ----------------------------------------------------------------------------

    def route(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        only_client: str | None = None,
        skip_client: str | None = None,
    ) -> int:
        """Deliver to every matching subscription at min(``qos``, its QoS); returns how many got it now.

        ``only_client`` narrows the delivery to one client; ``skip_client`` leaves one out.
        """
        packet0: bytes | None = None
        delivered = 0
        for session, granted in self.index.match(topic):
            client_id = session.client_id
            if (only_client is not None and client_id != only_client) or client_id == skip_client:
                continue
            level = min(qos, granted)
            handler = session.handler
            if handler is not None:
                if level:
                    handler.publish_nowait(topic, payload, level)
                else:
                    if packet0 is None:
                        packet0 = encode_publish(topic, payload, 0, None)
                    handler.write_qos0(packet0)
                delivered += 1
            elif (
                level
                and not session.clean_session
                and not session.enqueue(Outgoing(topic, payload, level, retain=False))
            ):
                self.shed.queue_full += 1
        return delivered

    def collector(self) -> BrokerCollector:
        """The broker's Prometheus metrics, to register where ``/metrics`` is rendered."""
        return BrokerCollector(self.shed)

    def retain(self, topic: str, payload: bytes, qos: int) -> None:
        """Store a retained message; an empty payload clears the topic instead [MQTT-3.3.1-10]."""
        if payload:
            self.retained[topic] = (payload, qos)
        else:
            self.retained.pop(topic, None)

    def publish_will(self, will: Will) -> None:
        """A connection ended without DISCONNECT: its will goes out (and is retained if asked)."""
        if will.retain:
            self.retain(will.topic, will.payload, will.qos)
        self.route(will.topic, will.payload, will.qos)

    def on_publish(
        self, handler: ConnectionHandler, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Awaitable[None] | None:
        """A service's PUBLISH: checked, retained if asked, routed. Never waits."""
        del handler
        check_topic(topic)
        if retain:
            self.retain(topic, payload, qos)
        self.route(topic, payload, qos)
        return None

    # --- subscriptions -----------------------------------------------------------------------

    def on_subscribe(
        self, handler: ConnectionHandler, packet_id: int, topics: list[tuple[str, int]]
    ) -> Awaitable[None] | None:
        """SUBSCRIBE: grant or refuse each filter, SUBACK, then the retained messages of each.

        ``None`` when handled at once (no filter needed the directory: a device's own inbox and
        presence, a service's anything); otherwise something to await, reading paused meanwhile.
        """
        session = handler.session
        codes: list[int] = []
        for topic_filter, qos in topics:
            code = self.add_subscription(session, topic_filter, qos)
            if not isinstance(code, int):
                return self._subscribe_waiting(handler, packet_id, topics, codes, code)
            codes.append(code)
        self.subscribed(handler, packet_id, topics, codes)
        return None

    async def _subscribe_waiting(
        self,
        handler: ConnectionHandler,
        packet_id: int,
        topics: list[tuple[str, int]],
        codes: list[int],
        pending: Awaitable[int],
    ) -> None:
        """The rest of ``on_subscribe`` once a filter's answer must be waited for (in order)."""
        codes.append(await pending)
        for topic_filter, qos in topics[len(codes) :]:
            code = self.add_subscription(handler.session, topic_filter, qos)
            codes.append(code if isinstance(code, int) else await code)
        self.subscribed(handler, packet_id, topics, codes)

    def subscribed(
        self, handler: ConnectionHandler, packet_id: int, topics: list[tuple[str, int]], codes: list[int]
    ) -> None:
        """Every filter of a SUBSCRIBE decided: SUBACK, then the retained messages of those granted."""
        handler.suback(packet_id, codes)
        if handler.session.handler is not handler:
            return  # the connection ended meanwhile
        for (topic_filter, _), code in zip(topics, codes, strict=True):
            if code != REFUSED:
                self._send_retained(handler, topic_filter, code)

    def on_unsubscribe(self, handler: ConnectionHandler, packet_id: int, topics: list[str]) -> None:
        """UNSUBSCRIBE: remove each filter, then UNSUBACK."""
        client_id = handler.session.client_id
        for topic_filter in topics:
            self.index.remove(topic_filter, client_id)
        handler.unsuback(packet_id)

    def add_subscription(self, session: MqttSession, topic_filter: str, qos: int) -> int | Awaitable[int]:
        """Subscribe ``session`` if the filter is valid and allowed: granted QoS or 0x80, or an awaitable."""
        if not is_valid_filter(topic_filter) or qos not in {0, 1, 2}:
            return REFUSED
        allowed = self._acl.check(session, topic_filter)
        if isinstance(allowed, bool):
            return self._grant(session, topic_filter, qos, allowed=allowed)
        return self._grant_after(session, topic_filter, qos, allowed)

    async def _grant_after(
        self, session: MqttSession, topic_filter: str, qos: int, allowed: Awaitable[bool]
    ) -> int:
        return self._grant(session, topic_filter, qos, allowed=await allowed)

    def _grant(self, session: MqttSession, topic_filter: str, qos: int, *, allowed: bool) -> int:
        if not allowed:
            return REFUSED
        self.index.add(topic_filter, session, qos)
        return qos

    def _send_retained(self, handler: ConnectionHandler, topic_filter: str, granted: int) -> None:
        if "+" in topic_filter or "#" in topic_filter:
            found = [(topic, kept) for topic, kept in self.retained.items() if matches(topic, topic_filter)]
        else:
            kept = self.retained.get(topic_filter)
            found = [] if kept is None else [(topic_filter, kept)]
        for topic, (payload, qos) in found:
            handler.publish_nowait(topic, payload, min(granted, qos), retain=True)

    # --- sessions ------------------------------------------------------------------------------

    def forget(self, session: MqttSession) -> None:
        """End ``session``: its subscriptions (O(its filters)) and whatever it had queued."""
        if self.sessions.get(session.client_id) is session:  # not a newer one of the same client id
            del self.sessions[session.client_id]
            self.index.remove_client(session.client_id)
        session.clear()


def check_topic(topic: str) -> None:
    """A topic name (PUBLISH, will) must be non-empty, without wildcards or NUL, and not a ``$`` topic."""
    if not topic:
        raise ProtocolViolation("empty topic name [MQTT-4.7.3-1]")
    if "#" in topic or "+" in topic:
        raise ProtocolViolation("wildcard in a topic name [MQTT-3.3.2-2]")
    if "\x00" in topic:  # the codec refuses it in a PUBLISH already; a will topic comes here
        raise ProtocolViolation("NUL in a topic name [MQTT-1.5.3-2]")
    if topic[0] == "$":
        raise ProtocolViolation("clients may not publish to $ topics [MQTT-4.7.2-1]")
