"""The Hubbub broker: amqtt 0.12.1 with the seams a chat platform needs.

Overridden internals (amqtt is pinned to the exact version; each seam has a test):

- ``_initialize_client_session``: authenticate *before* the CONNECT may touch an existing
  session. Stock amqtt deletes a clean session, or takes over a connected one, for
  whoever sends a CONNECT with its client id — authenticated or not.
- ``_handle_message_delivery``: a device's publish to ``conv/{cid}/send`` goes to ingest
  instead of being broadcast; nobody subscribes to it.
- ``stream_connected`` / ``websocket_connected``: every connection's reader is wrapped
  in ``PacketLimitReader`` so an oversized packet is refused from its fixed header.
  A connection must send its CONNECT within ``connect_timeout_s`` (stock amqtt waits
  for ever, so idle sockets could pile up).

Server events (messages, acks, errors, conversation changes) are delivered straight to
the sessions subscribed to ``user/{uid}/inbox`` — a dictionary lookup per recipient —
rather than through amqtt's broadcast loop, which tests every subscription filter on the
node for every message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker_plugins.auth import SERVICE_USERNAME_PREFIX
from broker_plugins.fanout import fan_out
from broker_plugins.ingest import Ingest, IngestLimits
from broker_plugins.limits import PacketLimitReader
from hubbub import topics
from hubbub.envelope import AcceptedMessage, CommitResult, error_event
from hubbub.errors import MessageRejected
from hubbub.ids import SnowflakeGenerator
from hubbub.stores import Directory
from hubbub.tokens import TokenCodec
from hubbub.topics import TopicKind

__all__ = ["BrokerOptions", "HubbubBroker"]

logger = logging.getLogger(__name__)

TCP_LISTENER = "default"
WS_LISTENER = "ws"


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """What the broker needs from the settings."""

    bind: str
    mqtt_port: int
    max_packet_bytes: int
    connect_timeout_s: float


class HubbubBroker(Broker):
    """amqtt's broker with authentication-first CONNECT and bounded packets."""

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
                "broker_plugins.acl.TopicAclPlugin": {},
            },
        }
        super().__init__(config)
        self._options = options
        self.ingest = Ingest(directory, accepted, ids, limits, self._report_error)
        self._deliveries: set[asyncio.Task[Any]] = set()
        # Client ids authenticated in _initialize_client_session, consumed by _authenticate.
        self._authenticated: set[str] = set()

    @property
    def mqtt_port(self) -> int:
        """The TCP port actually bound (differs from the setting when that is 0)."""
        sockets = self._servers[TCP_LISTENER].instance.sockets
        return int(sockets[0].getsockname()[1])

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """A TCP connection: bounded reader, then amqtt's session handling."""
        limited = PacketLimitReader(StreamReaderAdapter(reader), self._options.max_packet_bytes)
        await self._client_connected(listener_name, limited, StreamWriterAdapter(writer))

    async def websocket_connected(self, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """A WebSocket connection accepted by the HTTP server (see ``websocket.py``)."""
        limited = PacketLimitReader(reader, self._options.max_packet_bytes)
        await self._client_connected(WS_LISTENER, limited, writer)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await asyncio.wait_for(
                BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager),
                self._options.connect_timeout_s,
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

        session = incoming
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for attribute in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive"):
                setattr(session, attribute, getattr(incoming, attribute))
            session.username = incoming.username
            session.password = incoming.password
            session.parent = 1
        else:
            incoming.parent = 0
        self._authenticated.add(session.client_id)
        return handler, session

    async def _authenticate(self, session: Session, listener: ListenerConfig | None) -> bool:
        # Already decided in _initialize_client_session, before the session was touched.
        del listener
        if session.client_id in self._authenticated:
            self._authenticated.discard(session.client_id)
            return True
        return False

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        message = wait_deliver.result()
        username = client_session.username or ""
        if message is not None and message.topic and not username.startswith(SERVICE_USERNAME_PREFIX):
            parsed = topics.parse(message.topic)
            if parsed is not None and parsed.kind is TopicKind.CONVERSATION_SEND:
                await self.ingest.receive(
                    int(username), client_session.client_id, parsed.entity_id, message.data
                )
                return True
        return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))

    def deliver(self, topic: str, payload: bytes, *, device_id: str | None = None) -> None:
        """Publish ``payload`` to the sessions subscribed to exactly ``topic`` (or one of them).

        Delivery is at QoS min(1, subscription QoS). A disconnected persistent session
        (clean_session=0) keeps QoS 1 events for its return, as MQTT requires.
        """
        for session, subscription_qos in self._subscriptions.get(topic, ()):
            if device_id is not None and session.client_id != device_id:
                continue
            qos = min(subscription_qos, 1)
            if session.transitions.state == "connected":
                handler = self._sessions[session.client_id][1]
                task = asyncio.create_task(handler.mqtt_publish(topic, payload, qos, retain=False))
                self._deliveries.add(task)
                task.add_done_callback(self._delivery_done)
            elif qos and not session.clean_session:
                session.retained_messages.put_nowait(RetainedApplicationMessage(None, topic, payload, qos))

    def _delivery_done(self, task: asyncio.Task[Any]) -> None:
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.info("delivery failed: %r", task.exception())

    def _report_error(
        self, user_id: int, device_id: str, conversation_id: int, cmid: str | None, error: MessageRejected
    ) -> None:
        self.deliver(topics.inbox(user_id), error_event(conversation_id, cmid, error), device_id=device_id)

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
