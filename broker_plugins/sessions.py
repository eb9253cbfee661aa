r"""MQTT sessions, owned by the broker: what a client id keeps across its connections.

amqtt's ``Session`` carried a ``transitions.Machine`` (about 23 KB each, more than the
whole budget of an idle chat connection), four ``asyncio.Queue``\\s, and fields the broker
never read; the broker used to trim it by overriding its private ``_init_states`` and
reusing its ``retained_messages`` queue as the offline queue. This module replaces it:
a slotted ``MqttSession`` with exactly the state MQTT 3.1.1 asks a server to keep
[MQTT-3.1.2-4]: the subscriptions (in ``subscriptions.py``), QoS 1/2 messages sent but
not acknowledged (``inflight_out``), QoS 2 packet ids received but not released
(``inflight_in``), and the messages queued while the client is away or its in-flight window
is full (``queue``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker_plugins.handler import ConnectionHandler

__all__ = ["MAX_QUEUED", "Identity", "MqttSession", "Outgoing", "Will"]

MAX_QUEUED = 10_000  # queued messages per session (offline, or beyond the in-flight window) before dropping
_MAX_PACKET_ID = 65_535


class Identity:
    """Who authenticated: a device of ``user_id``, or a service (``user_id`` is ``None``)."""

    __slots__ = ("user_id", "username")

    def __init__(self, username: str, user_id: int | None) -> None:
        self.username = username
        self.user_id = user_id


class Will:
    """A CONNECT's last will: published if the connection ends without DISCONNECT (services only)."""

    __slots__ = ("payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain


class Outgoing:
    """A QoS 1/2 PUBLISH to a client: queued (``packet_id`` 0) or in flight until acknowledged."""

    __slots__ = ("packet_id", "payload", "qos", "released", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, *, retain: bool, packet_id: int = 0) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.packet_id = packet_id
        self.released = False  # QoS 2: PUBREC received, PUBREL sent


class MqttSession:
    """One client id's session; ``handler`` is its live connection, if any."""

    __slots__ = (
        "_last_packet_id",
        "_queue",
        "clean_session",
        "client_id",
        "handler",
        "inflight_in",
        "inflight_out",
        "keep_alive",
        "user_id",
        "username",
        "will",
    )

    def __init__(self, client_id: str, identity: Identity, *, clean_session: bool) -> None:
        self.client_id = client_id
        self.username = identity.username
        self.user_id = identity.user_id
        self.clean_session = clean_session
        self.will: Will | None = None
        self.keep_alive = 0  # seconds of silence before the connection is closed (0: never)
        self.handler: ConnectionHandler | None = None
        self.inflight_out: dict[int, Outgoing] = {}
        self.inflight_in: dict[int, None] = {}
        self._queue: deque[Outgoing] | None = None  # allocated when first used: nearly always empty
        self._last_packet_id = 0

    @property
    def connected(self) -> bool:
        """Whether the session has a live connection."""
        return self.handler is not None

    def next_packet_id(self) -> int:
        """A packet id in 1..65535 not in flight either way."""
        packet_id = self._last_packet_id
        for _ in range(_MAX_PACKET_ID):
            packet_id = packet_id % _MAX_PACKET_ID + 1
            if packet_id not in self.inflight_out and packet_id not in self.inflight_in:
                self._last_packet_id = packet_id
                return packet_id
        raise OverflowError("no free packet id: 65535 messages in flight")

    def enqueue(self, message: Outgoing) -> bool:
        """Keep ``message`` until it can be sent; ``False`` (dropped) when the queue is full."""
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        elif len(queue) >= MAX_QUEUED:
            return False
        queue.append(message)
        return True

    def has_queued(self) -> bool:
        """Whether messages are waiting to be sent."""
        return bool(self._queue)

    def dequeue(self) -> Outgoing:
        """The oldest queued message (``has_queued`` must be true)."""
        queue = self._queue
        assert queue is not None  # noqa: S101 - guarded by has_queued
        message = queue.popleft()
        if not queue:
            self._queue = None
        return message

    def clear(self) -> None:
        """Forget everything queued or in flight (the session ends)."""
        self._queue = None
        self.inflight_out.clear()
        self.inflight_in.clear()
