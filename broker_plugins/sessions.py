"""A lighter amqtt ``Session``: the same fields, a three-state switch instead of a ``transitions.Machine``.

Each stock ``Session`` builds its own ``transitions.Machine`` — about 23 KB per session,
more than the whole budget of an idle chat connection. The broker only ever asks a
session's ``transitions`` for ``state``, ``is_connected()``, ``connect()`` and
``disconnect()``; ``SessionState`` answers exactly those, with the same enter-hooks
(connect and disconnect times) and the same refusal of ``connect`` while connected.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from amqtt.session import Session

__all__ = ["AlreadyConnected", "LightQueue", "LightSession", "SessionState"]

CONNECTED = "connected"
DISCONNECTED = "disconnected"


class AlreadyConnected(ValueError):
    """``connect`` on a connected session: amqtt's take-over path expects a ``ValueError``."""


class SessionState:
    """``new`` -> ``connected`` <-> ``disconnected``, as amqtt's machine allows."""

    __slots__ = ("_session", "state")

    def __init__(self, session: LightSession) -> None:
        self._session = session
        self.state = "new"

    def is_connected(self) -> bool:
        """Whether the session has a live connection."""
        return self.state == CONNECTED

    def connect(self) -> None:
        """A connection was accepted; refused while another one is live."""
        if self.state == CONNECTED:
            raise AlreadyConnected("session is already connected")
        self.state = CONNECTED
        self._session.on_connected()

    def disconnect(self) -> None:
        """The connection ended (allowed from any state, as in amqtt)."""
        self.state = DISCONNECTED
        self._session.on_disconnected()


class LightQueue:
    """The part of ``asyncio.Queue`` amqtt and the broker use, allocated only when first used.

    An empty ``asyncio.Queue`` holds three deques and an ``Event`` (about 2.5 KB); a session
    and its handler had four of them, nearly always empty. Only the non-blocking methods
    are offered: nothing in the broker waits on these queues (``handler.py`` drains them).
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque[Any] | None = None

    def empty(self) -> bool:
        """Whether nothing is queued."""
        return not self._items

    def qsize(self) -> int:
        """How many items are queued."""
        return len(self._items) if self._items else 0

    def put_nowait(self, item: Any) -> None:  # noqa: ANN401 - amqtt queues any message type
        """Append ``item``."""
        if self._items is None:
            self._items = deque()
        self._items.append(item)

    def get_nowait(self) -> Any:  # noqa: ANN401
        """The oldest item; ``asyncio.QueueEmpty`` when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


class LightSession(Session):
    """amqtt's ``Session`` with ``SessionState`` as its ``transitions`` and ``LightQueue`` queues."""

    last_connect_time: int | None
    last_disconnect_time: int | None

    def __init__(self) -> None:
        super().__init__()
        self.retained_messages = LightQueue()
        self.delivered_message_queue = LightQueue()

    def _init_states(self) -> None:
        self.transitions = SessionState(self)

    def on_connected(self) -> None:
        """Record the connect time, as amqtt's enter-connected hook does (without its log line)."""
        self.last_connect_time = int(time.time())
        self.last_disconnect_time = None

    def on_disconnected(self) -> None:
        """Record the disconnect time, as amqtt's enter-disconnected hook does."""
        self.last_disconnect_time = int(time.time())
