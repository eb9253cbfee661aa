"""What a connection hands to the broker (``Router``), and the errors a client's protocol breach raises.

Kept apart from ``handler.py`` so the connection's packet loop and the broker's side of it each
read on their own: the handler calls these methods as packets arrive, the broker
(``broker.py``, ``routing.py``) implements them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

from amqtt.errors import MQTTError

if TYPE_CHECKING:
    from broker_plugins.handler import ConnectionHandler
    from broker_plugins.keepalive import KeepaliveWheel
    from broker_plugins.metrics import ShedCounts

__all__ = ["ConnectRefused", "ProtocolViolation", "Router"]


class ProtocolViolation(MQTTError):
    """The client broke the protocol: the connection is closed without a reply [MQTT-4.8.0-1]."""


class ConnectRefused(MQTTError):
    """A CONNECT refused before authentication: answered with CONNACK ``return_code``, then closed.

    Raised by ``connect.py``, which is compiled: a compiled class cannot subclass amqtt's
    untyped error (``build_compiled.py``), so the errors live here.
    """

    def __init__(self, return_code: int, reason: str) -> None:
        super().__init__(f"CONNECT refused: {reason}")
        self.return_code = return_code


class Router(Protocol):
    """What the handler hands to the broker, and where it counts what it sheds."""

    shed: ShedCounts
    keepalive: KeepaliveWheel
    max_packet_bytes: int
    connect_timeout_s: int  # whole seconds a new connection has to complete its CONNECT

    def connection_made(self, handler: ConnectionHandler) -> None:
        """A new connection (its CONNECT follows in ``connect_received``)."""
        ...

    def connect_received(self, handler: ConnectionHandler, body: bytes) -> Awaitable[None] | None:
        """The body of the connection's CONNECT: ``handler.accept`` it or refuse it (and close).

        ``None`` when done at once, else something to await first (reading goes on meanwhile,
        the bytes kept until the CONNECT is accepted).
        """
        ...

    def connection_ended(self, handler: ConnectionHandler, clean: bool) -> None:
        """A connection ended (``clean``: by DISCONNECT): will, session, presence once accepted.

        Called once more by ``accept`` when the connection ended while its CONNECT was checked.
        """
        ...

    def on_publish(
        self, handler: ConnectionHandler, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Awaitable[None] | None:
        """A client's PUBLISH; ``None`` when handled already, else something to await first."""
        ...

    def on_subscribe(
        self, handler: ConnectionHandler, packet_id: int, topics: list[tuple[str, int]]
    ) -> Awaitable[None] | None:
        """A SUBSCRIBE: subscribe, SUBACK (``handler.suback``), then retained messages.

        ``None`` when handled at once, else something to await first (an ACL lookup).
        """
        ...

    def on_unsubscribe(self, handler: ConnectionHandler, packet_id: int, topics: list[str]) -> None:
        """An UNSUBSCRIBE: unsubscribe, then UNSUBACK (``handler.unsuback``)."""
        ...
