"""The Hubbub broker: amqtt 0.12.1 with the seams a chat platform needs.

Routing, delivery, subscriptions and the connection lifecycle are ``RoutingBroker``'s
(``routing.py``, with the per-connection ``handler.py``): work per message proportional
to its recipients. On top of that, this class (amqtt is pinned to the exact version;
each seam has a test):

- ``_initialize_client_session``: authenticate *before* the CONNECT may touch an existing
  session. Stock amqtt deletes a clean session, or takes over a connected one, for
  whoever sends a CONNECT with its client id — authenticated or not. The CONNECT is read
  into a ``LightSession`` (``connect.py``, ``sessions.py``).
- ``on_publish``: a device's publish to ``conv/{cid}/send`` goes to ingest instead of
  being routed (nobody subscribes to it), ``conv/{cid}/typing`` likewise; a device may
  publish nowhere else. Services publish anywhere.
- ``add_subscription``: a subscription to ``presence/{uid}`` with no retained state (after
  a restart, or for a user never seen) gets ``offline`` with the stored last activity.
- ``stream_connected`` / ``websocket_connected``: every connection's reader is wrapped
  in ``PacketLimitReader`` so an oversized packet is refused from its fixed header.
  A connection must send its CONNECT within ``connect_timeout_s`` (stock amqtt waits
  for ever, so idle sockets could pile up).

Server events (messages, acks, errors, conversation changes) are delivered to the
sessions subscribed to ``user/{uid}/inbox`` by ``deliver``: one index lookup per user.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import RetainedApplicationMessage
from amqtt.contexts import ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker_plugins.auth import SERVICE_USERNAME_PREFIX
from broker_plugins.connect import read_connect
from broker_plugins.fanout import fan_out
from broker_plugins.handler import HubbubProtocolHandler, keepalive_deadline
from broker_plugins.ingest import Ingest, IngestLimits
from broker_plugins.limits import PacketLimitReader
from broker_plugins.presence import PresenceTracker
from broker_plugins.routing import REFUSED, RoutingBroker
from broker_plugins.transport import TcpReader, TcpWriter
from hubbub import topics
from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.events import presence_payload
from hubbub.ids import SnowflakeGenerator
from hubbub.stores import Directory
from hubbub.tokens import TokenCodec
from hubbub.topics import TopicKind

__all__ = ["BrokerOptions", "HubbubBroker"]

logger = logging.getLogger(__name__)

TCP_LISTENER = "default"
WS_LISTENER = "ws"
_SHUTDOWN_WRITE_S = 10.0
_EVENT_QOS = 1  # server events are published at QoS 1: delivered at min(1, the device's subscription)


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """What the broker needs from the settings."""

    bind: str
    mqtt_port: int
    max_packet_bytes: int
    connect_timeout_s: float
    presence_grace_s: float


class HubbubBroker(RoutingBroker):
    """amqtt's broker with authentication-first CONNECT, bounded packets, ingest and presence."""

    def __init__(
        self,
        options: BrokerOptions,
        *,
        tokens: TokenCodec,
        directory: Directory,
        accepted: asyncio.Queue[AcceptedMessage],
        ids: SnowflakeGenerator,
        limits: IngestLimits,
    ) -> None:
        config: dict[str, Any] = {
            "listeners": {
                TCP_LISTENER: {"type": "tcp", "bind": f"{options.bind}:{options.mqtt_port}"},
                WS_LISTENER: {"type": "external"},
            },
            "timeout_disconnect_delay": 0,
            "plugins": {
                "broker_plugins.auth.TokenAuthPlugin": {"tokens": tokens},
                "broker_plugins.acl.TopicAclPlugin": {"relations": directory},
                "broker_plugins.presence.PresencePlugin": {"tracker": None},
            },
        }
        self.presence = PresenceTracker(
            grace_s=options.presence_grace_s,
            publish=self._publish_presence,
            is_connected=self._device_connected,
        )
        config["plugins"]["broker_plugins.presence.PresencePlugin"]["tracker"] = self.presence
        super().__init__(config)
        self._options = options
        self._directory = directory
        self.ingest = Ingest(
            directory,
            accepted,
            ids,
            limits,
            to_device=lambda user_id, device_id, payload: self.deliver(
                topics.inbox(user_id), payload, device_id=device_id
            ),
            to_inbox=lambda user_id, payload: self.deliver(topics.inbox(user_id), payload),
        )
        # Client ids authenticated in _initialize_client_session, consumed by _authenticate.
        self._authenticated: set[str] = set()
        self._last_active: dict[int, int] = {}
        self._last_active_writer: asyncio.Task[None] | None = None
        self._notices: dict[str, tuple[str, bytes]] = {}

    @property
    def mqtt_port(self) -> int:
        """The TCP port actually bound (differs from the setting when that is 0)."""
        sockets = self._servers[TCP_LISTENER].instance.sockets
        return int(sockets[0].getsockname()[1])

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """A TCP connection: bounded reader, then the session's lifecycle."""
        limited = PacketLimitReader(TcpReader(reader), self._options.max_packet_bytes)
        await self._client_connected(listener_name, limited, TcpWriter(writer))

    async def websocket_connected(self, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """A WebSocket connection accepted by the HTTP server (see ``websocket.py``)."""
        limited = PacketLimitReader(reader, self._options.max_packet_bytes)
        await self._client_connected(WS_LISTENER, limited, writer)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[HubbubProtocolHandler, Session]:
        try:
            handler, incoming = await asyncio.wait_for(
                read_connect(reader, writer, self.plugins_manager), self._options.connect_timeout_s
            )
        except TimeoutError:
            logger.info("no CONNECT from %s:%s in time; closing", remote_address, remote_port)
            await writer.close()
            raise NoDataError("no CONNECT in time") from None
        except (AMQTTError, MQTTError, NoDataError) as exc:
            logger.info("refused connection from %s:%s: %s", remote_address, remote_port, exc)
            await writer.close()
            raise
        if not await super()._authenticate(incoming, None):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError("CONNECT refused: not authorized")
        handler.router = self
        session: Session = incoming
        if incoming.client_id and incoming.client_id in self._sessions:
            await self.take_over(incoming.client_id)  # before the old session is deleted or reused
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for attribute in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain"):
                setattr(session, attribute, getattr(incoming, attribute))
            session.username = incoming.username
            session.password = incoming.password
            session.parent = 1  # session present [MQTT-3.2.2-2]
        else:
            incoming.parent = 0
        session.keep_alive = keepalive_deadline(incoming.keep_alive)
        self._authenticated.add(session.client_id)
        return handler, session

    async def _authenticate(self, session: Session, listener: ListenerConfig | None) -> bool:
        # Already decided in _initialize_client_session, before the session was touched.
        del listener
        if session.client_id in self._authenticated:
            self._authenticated.discard(session.client_id)
            return True
        return False

    def may_publish(self, session: Session, topic: str) -> bool:
        """Services publish anywhere; a device's publishes are all taken by ``on_publish`` first."""
        del topic
        return (session.username or "").startswith(SERVICE_USERNAME_PREFIX)

    def on_publish(
        self, handler: HubbubProtocolHandler, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Awaitable[None] | None:
        """A device's send or typing notice goes to ingest; anything else is routed (services only)."""
        session = handler.session
        username = "" if session is None else session.username or ""
        if (
            session is not None
            and topic.startswith(topics.CONVERSATION_PREFIX)
            and not username.startswith(SERVICE_USERNAME_PREFIX)
        ):
            parsed = topics.parse(topic)
            if parsed is not None and parsed.kind is TopicKind.CONVERSATION_SEND:
                return self.ingest.receive(int(username), session.client_id, parsed.entity_id, payload)
            if parsed is not None and parsed.kind is TopicKind.CONVERSATION_TYPING:
                return self.ingest.typing(int(username), session.client_id, parsed.entity_id)
        result: Awaitable[None] | None = super().on_publish(handler, topic, payload, qos, retain)
        return result

    def deliver(
        self, topic: str, payload: bytes, *, device_id: str | None = None, skip_device: str | None = None
    ) -> None:
        """Publish ``payload`` at QoS 1 to the sessions subscribed to ``topic``.

        Only to ``device_id`` if given; never to ``skip_device``.

        Delivery is at QoS min(1, subscription QoS). A disconnected persistent session
        (clean_session=0) keeps QoS 1 events for its return, as MQTT requires.
        """
        self.route(topic, payload, _EVENT_QOS, only_client=device_id, skip_client=skip_device)

    async def committed(self, results: Sequence[CommitResult]) -> None:
        """The persister committed ``results``: deliver them and wake REST senders."""
        self.ingest.committed(results)
        await fan_out(results, self.ingest.members, self.deliver)

    async def publish(self, user_ids: Iterable[int], payload: bytes) -> None:
        """``InboxPublisher``: an event for every device of ``user_ids``."""
        for user_id in user_ids:
            self.deliver(topics.inbox(user_id), payload)

    def membership_changed(self, conversation_id: int) -> None:
        """``InboxPublisher``: forget the cached members of ``conversation_id``."""
        self.ingest.membership_changed(conversation_id)

    def online(self, user_ids: Collection[int]) -> set[int]:
        """``PresenceView``: users with a connected device on this node."""
        return self.presence.online(user_ids)

    def _device_connected(self, device_id: str) -> bool:
        session = self._sessions.get(device_id, (None, None))[0]
        return session is not None and session.transitions.state == "connected"

    async def _publish_presence(self, user_id: int, online: bool, at_ms: int) -> None:
        topic = topics.presence(user_id)
        payload = presence_payload(user_id, online=online, last_active_ms=at_ms)
        self._retained_messages[topic] = RetainedApplicationMessage(None, topic, payload, 0)
        self.deliver(topic, payload)
        self._record_last_active(user_id, at_ms)

    def _record_last_active(self, user_id: int, at_ms: int) -> None:
        """Store ``last_active_at`` behind the publish, one write at a time.

        A mass (re)connect used to start one database write per user at once: thousands
        of concurrent ORM sessions, ~20 KB of broker memory per connection at the peak,
        and connects waiting on the database. Pending writes are now one dict entry per
        user (a newer time replaces an older one), drained by a single task.
        """
        self._last_active[user_id] = max(at_ms, self._last_active.get(user_id, at_ms))
        if self._last_active_writer is None or self._last_active_writer.done():
            self._last_active_writer = asyncio.create_task(self._write_last_active(), name="last-active")

    async def _write_last_active(self) -> None:
        while self._last_active:
            user_id, at_ms = self._last_active.popitem()
            try:
                await self._directory.record_last_active(user_id, at_ms)
            except Exception:
                logger.exception("storing last activity of user %s failed", user_id)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """Subscribe (``RoutingBroker``), plus the stored presence of a user with no retained state."""
        code = await super().add_subscription(subscription, session)
        topic = subscription[0]
        if code != REFUSED and topic not in self._retained_messages:
            parsed = topics.parse(topic)
            if parsed is not None and parsed.kind is TopicKind.PRESENCE:
                user_id = parsed.entity_id
                online = bool(self.presence.online([user_id]))
                last = await self._directory.last_active(user_id)
                payload = presence_payload(user_id, online=online, last_active_ms=last)
                self._retained_messages[topic] = RetainedApplicationMessage(None, topic, payload, 0)
        return code

    def notify_device(self, user_id: int, device_id: str, payload: bytes) -> None:
        """Tell one device something now, or when it next subscribes to its inbox.

        Used when a push service rejected the device's token: the device, offline by
        definition, must hear it on its return. Kept in memory (one notice per device);
        the REST state says the same after a restart.
        """
        inbox = topics.inbox(user_id)
        if self.route(inbox, payload, 1, only_client=device_id) == 0:
            self._notices[device_id] = (inbox, payload)

    async def on_subscribe(
        self, handler: HubbubProtocolHandler, packet_id: int, topics_asked: list[tuple[str, int]]
    ) -> None:
        """Subscribe (``RoutingBroker``), then hand a returning device its pending notice."""
        await super().on_subscribe(handler, packet_id, topics_asked)
        session = handler.session
        notice = self._notices.get(session.client_id) if session is not None else None
        if notice is not None and any(topic == notice[0] for topic, _ in topics_asked):
            del self._notices[session.client_id]
            self.route(notice[0], notice[1], 1, only_client=session.client_id)

    async def shutdown(self) -> None:
        """Stop deciding presence, store the last activity still pending, then amqtt's shutdown."""
        self.presence.close()
        if self._last_active_writer is not None:
            await asyncio.wait([self._last_active_writer], timeout=_SHUTDOWN_WRITE_S)
        await super().shutdown()
