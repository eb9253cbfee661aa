"""amqtt's ``Broker`` with indexed routing and direct, non-blocking delivery.

What this replaces in amqtt 0.12.1, and why (every seam has a test in
``tests/broker_plugins/test_protocol_*.py`` / ``test_subscriptions*.py``):

- ``_broadcast_message`` / ``_run_broadcast``: a message went through a queue to a loop
  that tested it against every filter on the node, asked the ACL plugins about every
  recipient and started a task per delivery. Here ``route`` looks the topic up in the
  ``SubscriptionIndex`` and writes to each recipient at once (``publish_nowait``): the
  work is proportional to the recipients. Subscriptions were authorised when made, so
  there is no per-recipient ACL call.
- the QoS of a delivery is min(publish QoS, subscription QoS) [MQTT-3.8.4-6]; stock
  amqtt used the subscription's.
- ``add_subscription`` / ``_del_subscription`` / ``_del_all_subscriptions``: kept in the
  index; a repeated SUBSCRIBE replaces the QoS [MQTT-3.8.4-3]; ending a session costs
  O(its filters), not O(all filters).
- ``_handle_client_session`` / ``_client_message_loop``: no walk over every filter on
  the node at each CONNECT (10,000 connections took ~100 s), no per-connection tasks
  waiting on four queues — the handler calls ``on_publish`` / ``on_subscribe`` directly.
  A connection taking over a connected client id closes the old one first [MQTT-3.1.4-2].
- retained messages: a zero-byte retained PUBLISH of any QoS clears the topic and is not
  stored [MQTT-3.3.1-10/11]; retained messages go to a new subscription only
  [MQTT-3.3.1-6], at min(retained QoS, granted QoS).
- messages for a disconnected persistent session (QoS 1/2) are queued and sent, in order,
  on its return; unacknowledged ones are resent with DUP (``handler.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.broker import Broker, RetainedApplicationMessage, Server
from amqtt.contexts import Action
from amqtt.events import BrokerEvents
from amqtt.session import Session

from broker_plugins.codec import encode_publish
from broker_plugins.handler import HubbubProtocolHandler, ProtocolViolation, queue_message
from broker_plugins.subscriptions import SubscriptionIndex, is_valid_filter, matches

__all__ = ["REFUSED", "RoutingBroker"]

logger = logging.getLogger(__name__)

REFUSED = 0x80
_TAKEOVER_WAIT_S = 5.0


class RoutingBroker(Broker):
    """The routing core; ``HubbubBroker`` adds authentication-first CONNECT, ingest and presence."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.index = SubscriptionIndex(self._subscriptions)

    # --- delivery ----------------------------------------------------------------------------

    def route(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        only_client: str | None = None,
        skip_client: str | None = None,
    ) -> int:
        """Deliver to every matching subscription at min(``qos``, its QoS); returns how many got it.

        ``only_client`` narrows the delivery to one client; ``skip_client`` leaves one out.
        """
        sessions = self._sessions
        packet0: bytes | None = None
        delivered = 0
        matched = self._subscriptions.get(topic) or ()
        if self.index.has_wildcards:
            matched = [*matched, *self.index.match_wildcards(topic)]
        for session, granted in matched:
            client_id = session.client_id
            if (only_client is not None and client_id != only_client) or client_id == skip_client:
                continue
            level = min(qos, granted)
            if session.transitions.state == "connected":
                handler = sessions[client_id][1]
                if level:
                    handler.publish_nowait(topic, payload, level)
                else:
                    if packet0 is None:
                        packet0 = encode_publish(topic, payload, 0, None)
                    handler.write_qos0(packet0)
                delivered += 1
            elif level and not session.clean_session:
                queue_message(session, topic, payload, level)
        return delivered

    def retain(self, topic: str, payload: bytes, qos: int) -> None:
        """Store a retained message; an empty payload clears the topic instead [MQTT-3.3.1-10]."""
        if payload:
            self._retained_messages[topic] = RetainedApplicationMessage(None, topic, payload, qos)
        else:
            self._retained_messages.pop(topic, None)

    def on_publish(
        self, handler: HubbubProtocolHandler, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Any:  # noqa: ANN401 - Awaitable[None] | None, see handler.Router
        """A client's PUBLISH: checked, retained if asked, routed. Never waits."""
        _check_topic(topic)
        session = handler.session
        if session is not None and not self.may_publish(session, topic):
            logger.info("refused PUBLISH to %r by device_id=%s", topic, session.client_id)
            return None
        if retain:
            self.retain(topic, payload, qos)
        self.route(topic, payload, qos)
        return None

    def may_publish(self, session: Session, topic: str) -> bool:
        """Whether ``session`` may publish to ``topic`` (subclasses narrow it); every client may here."""
        del session, topic
        return True

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        """Plugin broadcasts and wills: routed at once (without ``force_qos``, at each subscription's QoS)."""
        del session
        if topic and data is not None:
            self.route(topic, bytes(data), 2 if force_qos is None else force_qos)

    # --- subscriptions -----------------------------------------------------------------------

    async def on_subscribe(
        self, handler: HubbubProtocolHandler, packet_id: int, topics: list[tuple[str, int]]
    ) -> None:
        """SUBSCRIBE: grant or refuse each filter, SUBACK, then the retained messages of each."""
        session = handler.session
        if session is None:
            return
        codes = [await self.add_subscription(subscription, session) for subscription in topics]
        handler.suback(packet_id, codes)
        for (topic_filter, _), code in zip(topics, codes, strict=True):
            if code != REFUSED:
                await self.plugins_manager.fire_event(
                    BrokerEvents.CLIENT_SUBSCRIBED, client_id=session.client_id, topic=topic_filter, qos=code
                )
                await self._publish_retained_messages_for_subscription((topic_filter, code), session)

    async def on_unsubscribe(self, handler: HubbubProtocolHandler, packet_id: int, topics: list[str]) -> None:
        """UNSUBSCRIBE: remove each filter, then UNSUBACK."""
        session = handler.session
        if session is None:
            return
        for topic_filter in topics:
            self.index.remove(topic_filter, session.client_id)
            await self.plugins_manager.fire_event(
                BrokerEvents.CLIENT_UNSUBSCRIBED, client_id=session.client_id, topic=topic_filter
            )
        handler.unsuback(packet_id)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """Subscribe ``session`` if the filter is valid and allowed; the granted QoS or 0x80."""
        topic_filter, qos = subscription
        if not is_valid_filter(topic_filter) or qos not in {0, 1, 2}:
            return REFUSED
        if not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return REFUSED
        self.index.add(topic_filter, session, qos)
        return qos

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        return int(self.index.remove(a_filter, session.client_id))

    async def _del_all_subscriptions(self, session: Session) -> None:
        self.index.remove_client(session.client_id)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, granted = subscription
        held = self.index.qos_of(topic_filter, session.client_id)
        handler = self._sessions.get(session.client_id, (None, None))[1]
        if (
            held is None
            or not isinstance(handler, HubbubProtocolHandler)
            or not session.transitions.is_connected()
        ):
            return
        if "+" in topic_filter or "#" in topic_filter:
            found = [kept for topic, kept in self._retained_messages.items() if matches(topic, topic_filter)]
        else:
            kept = self._retained_messages.get(topic_filter)
            found = [] if kept is None else [kept]
        for kept in found:
            level = min(granted, granted if kept.qos is None else kept.qos)
            handler.publish_nowait(kept.topic, bytes(kept.data), level, retain=True)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        handler = self._sessions.get(session.client_id, (None, None))[1]
        if isinstance(handler, HubbubProtocolHandler):
            handler.flush_queue()

    # --- connection lifecycle ----------------------------------------------------------------

    async def _delete_session(self, client_id: str) -> None:
        """A clean CONNECT: forget the old session (O(its filters); no log formatting per connect)."""
        session = self._sessions.pop(client_id, (None, None))[0]
        if session is not None:
            self.index.remove_client(client_id)
            session.clear_queues()

    async def _cleanup_session(self, client_id: str) -> None:
        """Expiry or shutdown: stop the connection, if any, and forget the session."""
        session, handler = self._sessions.pop(client_id, (None, None))
        if handler is not None:
            await self._stop_handler(handler)
        if session is not None:
            self.index.remove_client(client_id)
            session.clear_queues()

    async def take_over(self, client_id: str) -> None:
        """Close the live connection of ``client_id`` (a new one is replacing it) and wait until it ended."""
        session, handler = self._sessions.get(client_id, (None, None))
        if session is None or handler is None or not session.transitions.is_connected():
            return
        logger.info("client id %s connected again: closing its previous connection", client_id)
        await handler.handle_connection_closed()
        await handler.stop()
        for _ in range(int(_TAKEOVER_WAIT_S / 0.01)):
            if not session.transitions.is_connected():
                return
            await asyncio.sleep(0.01)

    async def _handle_client_session(  # noqa: PLR0917 - amqtt's signature
        self,
        reader: Any,  # noqa: ANN401 - amqtt adapters
        writer: Any,  # noqa: ANN401
        client_session: Session,
        handler: HubbubProtocolHandler,
        server: Server,
        listener_name: str,
    ) -> None:
        del server
        authenticated = await self._authenticate(client_session, self.listeners_config[listener_name])
        if client_session.transitions.is_connected():
            await self.take_over(client_session.client_id)
        client_session.transitions.connect()
        handler.attach(client_session, reader, writer)
        self._sessions[client_session.client_id] = (client_session, handler)
        await handler.mqtt_connack_authorize(authenticated)
        if not authenticated:
            await writer.close()
            return
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED, client_id=client_session.client_id, client_session=client_session
        )
        await handler.start()  # resends what was in flight when the last connection ended
        handler.flush_queue()  # then what was queued while the session had no connection
        await self._client_message_loop(client_session, handler)

    async def _client_message_loop(self, client_session: Session, handler: HubbubProtocolHandler) -> None:
        """Wait for the connection to end; the handler reports packets to the broker directly."""
        try:
            result = await handler.wait_disconnect()
        except asyncio.CancelledError:
            result = None
        ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ended.set_result(result)
        await self._handle_disconnect(client_session, handler, ended)


def _check_topic(topic: str) -> None:
    """A PUBLISH topic must be non-empty, without wildcards, and not a ``$`` topic (as in amqtt)."""
    if not topic:
        raise ProtocolViolation("PUBLISH with an empty topic [MQTT-4.7.3-1]")
    if "#" in topic or "+" in topic:
        raise ProtocolViolation("wildcard in a PUBLISH topic [MQTT-3.3.2-2]")
    if topic[0] == "$":
        raise ProtocolViolation("clients may not publish to $ topics [MQTT-4.7.2-1]")
