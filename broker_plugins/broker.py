"""The Hubbub MQTT server: listeners, the CONNECT flow, and the seam to the messaging core.

``HubbubBroker`` speaks MQTT only. It holds the connections and sessions (``routing.py``,
``handler.py``, ``sessions.py``), and everything chat-shaped goes through the two
Protocols of ``hubbub/connections.py``:

- it reports to the core (``DeviceEvents``): a device connected or disconnected, published
  to ``conv/{cid}/send`` or ``conv/{cid}/typing`` (a device may publish nowhere else;
  services publish anywhere), subscribed to its inbox, or subscribed to a presence topic
  that holds no retained state yet (after a restart, or for a user never seen);
- it is driven by the core (``DeviceConnections``): ``to_inbox``, ``set_presence``,
  ``is_connected``, ``drop``.

A device's publish to any other ``conv/`` topic (``conv/abc/send``, ``conv//send``,
``conv/1/other``) is answered by the broker itself with an ``error`` event (code ``invalid``):
the core never sees it, as it has no conversation to name, and a mistyped send must not
vanish in silence. Well-formed topics pay nothing for this: it is the refusal path.

The CONNECT flow (``connect_received``), called by the handler with the CONNECT's body: a
connection must send its CONNECT within ``connect_timeout_s`` (stock amqtt waited for ever,
so idle sockets could pile up); it is authenticated *before* it may touch an existing
session (``auth.py``); a live connection of the same client id is closed first
[MQTT-3.1.4-2]; a clean session starts afresh, a persistent one resumes (CONNACK session
present [MQTT-3.2.2-2]); the device is reported to the core before its CONNACK, which waits
if the core asks it to (a cluster node subscribing to the user's inbox on NATS first). The
handler frames the CONNECT as every later packet, so an oversized one is refused from its
fixed header.

It runs within the turn of the event loop that read the CONNECT whenever nothing must be
waited for: a known token, a device ``SignedInDevices`` remembers as signed in, one node's
core. A reconnecting device thus costs no task, coroutine or timer: a reconnect storm is
mostly this path. A device the store must be asked about costs no task either: the rest runs
in a callback on the store's answer (a future, ``DeviceSessions``), and the connection's step
is a future that ends with the CONNACK. Only a cluster node's inbox subscription, waited for
before the CONNACK, runs as a task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED

from broker_plugins.acl import TopicAcl
from broker_plugins.auth import TokenAuthenticator
from broker_plugins.connect import Connect, ConnectRefused, decode_connect
from broker_plugins.handler import ConnectionHandler
from broker_plugins.keepalive import KeepaliveWheel, keepalive_deadline
from broker_plugins.routing import REFUSED, RoutingBroker, check_topic
from broker_plugins.sessions import Identity, MqttSession
from hubbub import topics
from hubbub.connections import DeviceEvents
from hubbub.errors import MessageRejected
from hubbub.events import error_event
from hubbub.futures import forward, passed_failure
from hubbub.sessions import DeviceSessions, SignedInDevices
from hubbub.stores import Directory
from hubbub.tokens import TokenCodec
from hubbub.topics import PRESENCE_PREFIX, TopicKind

__all__ = ["BrokerOptions", "HubbubBroker"]

logger = logging.getLogger(__name__)

_EVENT_QOS = 1  # server events are published at QoS 1: delivered at min(1, the device's subscription)
_SHUTDOWN_WAIT_S = 5.0
_LISTEN_BACKLOG = 4096  # a reconnect storm arrives at once; the kernel caps it at somaxconn


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """What the broker needs from the settings."""

    bind: str
    mqtt_port: int
    max_packet_bytes: int
    connect_timeout_s: float


class HubbubBroker(RoutingBroker):
    """The MQTT server: ``DeviceConnections`` for the messaging core, reporting to it as ``DeviceEvents``."""

    def __init__(
        self, options: BrokerOptions, *, tokens: TokenCodec, relations: Directory, devices: DeviceSessions
    ) -> None:
        super().__init__(TopicAcl(relations))
        self._options = options
        self._auth = TokenAuthenticator(tokens)
        self._devices = devices
        self._server: asyncio.Server | None = None
        self._remembered = devices if isinstance(devices, SignedInDevices) else None
        self._events: DeviceEvents | None = None
        self._connecting: set[ConnectionHandler] = set()  # connections whose CONNECT is not accepted yet
        self._closing = False
        self.keepalive = KeepaliveWheel()
        self.max_packet_bytes = options.max_packet_bytes
        self.connect_timeout_s = math.ceil(options.connect_timeout_s)

    async def start(self, events: DeviceEvents) -> None:
        """Listen on TCP; report devices to ``events`` from now on."""
        self._events = events
        self._closing = False
        self._server = await asyncio.get_running_loop().create_server(
            lambda: ConnectionHandler(self),
            self._options.bind or None,
            self._options.mqtt_port,
            reuse_address=True,
            backlog=_LISTEN_BACKLOG,
        )

    @property
    def mqtt_port(self) -> int:
        """The TCP port actually bound (differs from the setting when that is 0)."""
        if self._server is None:
            raise RuntimeError("the broker is not started")
        server: Any = self._server  # uvloop's has a list of sockets, typeshed says a tuple (mypyc checks)
        return int(server.sockets[0].getsockname()[1])

    async def shutdown(self) -> None:
        """Stop listening, close every connection and forget every session (idempotent)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._closing = True  # connections closed now are not devices going offline
        server.close()
        for session in list(self.sessions.values()):
            if session.handler is not None:
                session.handler.close()
        steps = {step for handler in self._connecting if (step := handler.step) is not None}
        for handler in list(self._connecting):
            handler.close()  # cancels its step
        if steps:
            await asyncio.wait(steps, timeout=_SHUTDOWN_WAIT_S)
        await server.wait_closed()
        for session in list(self.sessions.values()):
            self.forget(session)
        self.retained.clear()

    # --- connections -----------------------------------------------------------------------

    def connection_made(self, handler: ConnectionHandler) -> None:
        """A new connection (TCP, or WebSocket from ``websocket.py``): its CONNECT follows."""
        if self._closing:
            handler.close()
            return
        self._connecting.add(handler)

    def connect_received(self, handler: ConnectionHandler, body: bytes) -> Awaitable[None] | None:
        """The CONNECT: decoded, authenticated, then accepted at once unless something must be waited for."""
        try:
            connect = decode_connect(body, handler.remote())
        except ConnectRefused as refused:
            logger.info("refused connection from %s: %s", handler.remote(), refused)
            handler.refuse(refused.return_code)
            return None
        except MQTTError as exc:
            logger.info("refused connection from %s: %s", handler.remote(), exc)
            handler.close()
            return None
        identity = self._auth.authenticate(connect)
        if identity is None:
            handler.refuse(NOT_AUTHORIZED)
            return None
        user_id = identity.user_id
        if user_id is not None:
            remembered = self._remembered
            if remembered is None or not remembered.remembers(user_id, connect.client_id):
                return self._connect_when_signed_in(handler, connect, identity)
        return self._admit(handler, connect, identity)

    def _connect_when_signed_in(
        self, handler: ConnectionHandler, connect: Connect, identity: Identity
    ) -> asyncio.Future[None]:
        """The connection's step while the store is asked whether the device is still signed in."""
        user_id = identity.user_id
        assert user_id is not None  # noqa: S101 - a device: services are not asked about
        asked = self._devices.is_signed_in(user_id, connect.client_id)
        # A future as it is (the stores answer with one): ``ensure_future`` is interpreted code.
        answer = asked if isinstance(asked, asyncio.Future) else asyncio.ensure_future(asked)
        decided: asyncio.Future[None] = answer.get_loop().create_future()
        then = functools.partial(self._signed_in_answered, handler, connect, identity, decided)
        answer.add_done_callback(then)
        return decided

    def _signed_in_answered(
        self,
        handler: ConnectionHandler,
        connect: Connect,
        identity: Identity,
        decided: asyncio.Future[None],
        answer: asyncio.Future[bool],
    ) -> None:
        """The rest of ``connect_received`` once the store answered; ``decided`` ends with the CONNACK."""
        if decided.done() or passed_failure(decided, answer):  # done: the connection closed meanwhile
            return
        if not answer.result():
            logger.info("refused CONNECT device_id=%s: the device was signed out", connect.client_id)
            handler.refuse(NOT_AUTHORIZED)
        elif not handler.closed:  # else gone while the store was asked: nothing reported, nothing to undo
            pending = self._admit(handler, connect, identity)
            if pending is not None:
                _end_with(decided, asyncio.ensure_future(pending))
                return
        decided.set_result(None)

    def _admit(
        self, handler: ConnectionHandler, connect: Connect, identity: Identity
    ) -> Awaitable[None] | None:
        """Open the session and report the device; ``accept`` now, or once the core is ready."""
        session, present = self._open_session(connect, identity)
        user_id, events = session.user_id, self._events
        if user_id is not None and events is not None:
            pending = events.device_connected(user_id, session.client_id)
            if pending is not None:
                return self._accept_when_reported(pending, user_id, session, handler, present)
        self._accept(handler, session, present)
        return None

    def _accept(self, handler: ConnectionHandler, session: MqttSession, present: bool) -> None:
        self._connecting.discard(handler)
        handler.accept(session, present)

    def _open_session(self, connect: Connect, identity: Identity) -> tuple[MqttSession, bool]:
        """The session this CONNECT continues (session present) or starts, once no connection holds it."""
        client_id = connect.client_id
        existing = self.sessions.get(client_id)
        if existing is not None and existing.handler is not None:
            logger.info("client id %s connected again: closing its previous connection", client_id)
            existing.handler.close()  # ends it at once: will, session, report (``connection_ended``)
            existing = self.sessions.get(client_id)
        present = False
        if existing is not None and (connect.clean_session or existing.username != identity.username):
            self.forget(existing)
        elif existing is not None:
            present = True  # a persistent session resumes [MQTT-3.2.2-2]
        session = (
            existing
            if present and existing is not None
            else MqttSession(client_id, identity, clean_session=connect.clean_session)
        )
        session.will = connect.will
        session.keep_alive = keepalive_deadline(connect.keep_alive)
        self.sessions[client_id] = session
        return session, present

    async def _accept_when_reported(
        self,
        pending: Awaitable[None],
        user_id: int,
        session: MqttSession,
        handler: ConnectionHandler,
        present: bool,
    ) -> None:
        """Accept once the core is ready for the device (a cluster node: its inbox subscription).

        Meanwhile the session has no connection, so what is routed to it waits in its queue,
        as for an away device. A CONNECT of the same client id that arrived meanwhile and took
        the session first wins (the first to be reported gets it); so does a shutdown.
        """
        client_id = session.client_id
        try:
            await pending
        except asyncio.CancelledError:  # shutdown gave up waiting
            handler.close()
            raise
        except Exception:
            logger.exception("reporting device_id=%s connected failed; closing it", client_id)
        else:
            if not self._closing and self.sessions.get(client_id) is session and session.handler is None:
                self._accept(handler, session, present)
                return
        events = self._events
        if not self._closing and events is not None:
            events.device_disconnected(user_id, client_id)
        if self.sessions.get(client_id) is session and session.handler is None and session.clean_session:
            self.forget(session)
        handler.close()

    def connection_ended(self, handler: ConnectionHandler, clean: bool) -> None:
        """A connection ended: its will unless ``clean``, its session if clean, the report (once accepted)."""
        if not handler.accepted:
            self._connecting.discard(handler)
            return
        session = handler.session
        if not clean and session.will is not None:
            self.publish_will(session.will)
        if session.handler is handler:
            session.handler = None
            if session.clean_session:
                self.forget(session)
        user_id, events = session.user_id, self._events
        if user_id is not None and events is not None and not self._closing:
            events.device_disconnected(user_id, session.client_id)

    # --- what devices publish and subscribe --------------------------------------------------

    def on_publish(
        self, handler: ConnectionHandler, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Awaitable[None] | None:
        """A device's send or typing notice goes to the core; other device publishes are refused."""
        session = handler.session
        user_id = session.user_id
        if user_id is None:  # a service: routed like any MQTT publish
            return super().on_publish(handler, topic, payload, qos, retain)
        events = self._events
        conversation = topic.startswith(topics.CONVERSATION_PREFIX)
        if events is not None and conversation:
            parsed = topics.parse(topic)
            if parsed is not None and parsed.kind is TopicKind.CONVERSATION_SEND:
                return events.send(user_id, session.client_id, parsed.entity_id, payload)
            if parsed is not None and parsed.kind is TopicKind.CONVERSATION_TYPING:
                return events.typing(user_id, session.client_id, parsed.entity_id)
        check_topic(topic)
        logger.info("refused PUBLISH to %r by device_id=%s", topic, session.client_id)
        if conversation:  # a mistyped send deserves an answer, not silence
            error = MessageRejected("invalid", f"{topic!r} is not a conversation topic (conv/{{id}}/send)")
            self.to_inbox(user_id, error_event(None, None, error), only_device=session.client_id)
        return None

    def add_subscription(self, session: MqttSession, topic_filter: str, qos: int) -> int | Awaitable[int]:
        """Subscribe (``RoutingBroker``); a presence topic with no retained state asks the core for it."""
        code = super().add_subscription(session, topic_filter, qos)
        if isinstance(code, int) and (code == REFUSED or not self._needs_snapshot(topic_filter)):
            return code
        return self._with_snapshot(code, topic_filter)

    def _needs_snapshot(self, topic_filter: str) -> bool:
        """Whether ``topic_filter`` is a presence topic with no retained state (after a restart).

        Every device subscribes to its inbox on connecting: the prefix tells that apart without
        parsing (``topics.parse`` remembers 20,000 topics, which 10,000 devices' inbox and
        presence topics fill, so at that scale most of them were parsed afresh).
        """
        if (
            self._events is None
            or not topic_filter.startswith(PRESENCE_PREFIX)
            or topic_filter in self.retained
        ):
            return False
        parsed = topics.parse(topic_filter)
        return parsed is not None and parsed.kind is TopicKind.PRESENCE

    async def _with_snapshot(self, code: int | Awaitable[int], topic_filter: str) -> int:
        granted = code if isinstance(code, int) else await code
        events = self._events
        if granted != REFUSED and events is not None and self._needs_snapshot(topic_filter):
            parsed = topics.parse(topic_filter)
            assert parsed is not None  # noqa: S101 - a presence topic, checked just now
            snapshot = await events.presence_snapshot(parsed.entity_id)
            self.retained.setdefault(topic_filter, (snapshot, 0))  # unless set meanwhile
        return granted

    def subscribed(
        self,
        handler: ConnectionHandler,
        packet_id: int,
        topics_asked: list[tuple[str, int]],
        codes: list[int],
    ) -> None:
        """SUBACK, retained messages (``RoutingBroker``), then tell the core of an inbox subscription."""
        super().subscribed(handler, packet_id, topics_asked, codes)
        session = handler.session
        user_id, events = session.user_id, self._events
        if user_id is None or events is None or session.handler is not handler:
            return
        inbox = topics.inbox(user_id)
        if any(topic == inbox for topic, _ in topics_asked) and self.index.qos_of(inbox, session.client_id):
            events.inbox_subscribed(user_id, session.client_id)

    # --- DeviceConnections: what the messaging core asks -------------------------------------

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        """Deliver ``payload`` at QoS 1 to ``user/{user_id}/inbox`` (see ``DeviceConnections``)."""
        return self.route(topics.inbox(user_id), payload, _EVENT_QOS, only_device, skip_device)

    def set_presence(self, user_id: int, payload: bytes) -> None:
        """Retain ``payload`` on ``presence/{user_id}`` (QoS 0) and deliver it to the subscribers."""
        topic = topics.presence(user_id)
        self.retained[topic] = (payload, 0)
        self.route(topic, payload, _EVENT_QOS)

    def is_connected(self, device_id: str) -> bool:
        """Whether ``device_id`` has a live connection."""
        session = self.sessions.get(device_id)
        return session is not None and session.handler is not None

    def drop(self, device_id: str) -> None:
        """Close ``device_id``'s connection, if any, and forget a session that has none.

        The device was ended (sign-out, revocation). A session without a connection may be one
        whose CONNECT passed the signed-in check and now waits in ``_reported`` (a cluster node
        subscribing to the inbox): forgetting it makes that CONNECT end without a CONNACK, as
        its check would now refuse it. An away persistent session is void too.
        """
        session = self.sessions.get(device_id)
        if session is None:
            return
        if session.handler is not None:
            session.handler.close()
        else:
            self.forget(session)


def _end_with(step: asyncio.Future[None], task: asyncio.Future[None]) -> None:
    """``step`` ends as ``task`` does, and ``task`` is cancelled if ``step`` is (the connection closed)."""
    task.add_done_callback(functools.partial(forward, step))
    step.add_done_callback(lambda _: task.cancel())
