r"""MQTT sessions, owned by the broker: what a client id keeps across its connections.

amqtt's ``Session`` carried a ``transitions.Machine`` (about 23 KB each, more than the
whole budget of an idle chat connection), four ``asyncio.Queue``\\s, and fields the broker
never read; the broker used to trim it by overriding its private ``_init_states`` and
reusing its ``retained_messages`` queue as the offline queue. This module replaces it:
a slotted ``MqttSession`` with exactly the state MQTT 3.1.1 asks a server to keep
[MQTT-3.1.2-4]: the subscriptions (in ``subscriptions.py``), QoS 1/2 messages sent but
not acknowledged (``track`` / ``acknowledge``), QoS 2 packet ids received but not released
(``receive_qos2`` / ``release_qos2``), and the messages queued while the client is away or its
in-flight window is full (``enqueue``).

Each of those three containers exists only while it holds something: an idle device (the
common case by far) keeps none, and a session costs one small slotted object.
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
        "_inflight_in",
        "_inflight_out",
        "_last_packet_id",
        "_queue",
        "clean_session",
        "client_id",
        "handler",
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
        self._inflight_out: dict[int, Outgoing] | None = None  # by packet id; each of these three
        self._inflight_in: set[int] | None = None  # exists only while not empty
        self._queue: deque[Outgoing] | None = None  # allocated when first used: nearly always empty
        self._last_packet_id = 0

    @property
    def connected(self) -> bool:
        """Whether the session has a live connection."""
        return self.handler is not None

    def _next_packet_id(self) -> int:
        """A packet id in 1..65535 not in flight either way."""
        packet_id = self._last_packet_id
        out = self._inflight_out or {}
        received = self._inflight_in or ()
        for _ in range(_MAX_PACKET_ID):
            packet_id = packet_id % _MAX_PACKET_ID + 1
            if packet_id not in out and packet_id not in received:
                self._last_packet_id = packet_id
                return packet_id
        raise OverflowError("no free packet id: 65535 messages in flight")

    # --- QoS 1/2 messages sent, until acknowledged ------------------------------------------

    def track(self, message: Outgoing) -> int:
        """Give ``message`` a free packet id and keep it until acknowledged; returns the id."""
        message.packet_id = packet_id = self._next_packet_id()
        out = self._inflight_out
        if out is None:
            out = self._inflight_out = {}
        out[packet_id] = message
        return packet_id

    def in_flight(self) -> int:
        """How many messages sent are not acknowledged yet."""
        out = self._inflight_out
        return len(out) if out is not None else 0

    def unacknowledged(self) -> list[Outgoing]:
        """The messages sent and not acknowledged, oldest first (to resend on reconnect)."""
        out = self._inflight_out
        return list(out.values()) if out is not None else []

    def sent(self, packet_id: int) -> Outgoing | None:
        """The unacknowledged message with ``packet_id``, if any."""
        out = self._inflight_out
        return out.get(packet_id) if out is not None else None

    def acknowledge(self, packet_id: int) -> None:
        """PUBACK / PUBCOMP: the message with ``packet_id`` is delivered."""
        out = self._inflight_out
        if out is not None and out.pop(packet_id, None) is not None and not out:
            self._inflight_out = None

    # --- QoS 2 packet ids received, until released -------------------------------------------

    def receive_qos2(self, packet_id: int) -> bool:
        """Remember a QoS 2 PUBLISH's id until PUBREL; ``False`` if it is a resend of one kept."""
        received = self._inflight_in
        if received is None:
            received = self._inflight_in = set()
        elif packet_id in received:
            return False
        received.add(packet_id)
        return True

    def release_qos2(self, packet_id: int) -> None:
        """PUBREL: forget the id."""
        received = self._inflight_in
        if received is not None:
            received.discard(packet_id)
            if not received:
                self._inflight_in = None

    # --- queued until they can be sent ---------------------------------------------------------

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
        self._inflight_out = None
        self._inflight_in = None
