"""Keepalive deadlines of every connection, on one timer per due second instead of one per connection.

A client silent for 1.5 x its keepalive is disconnected [MQTT-3.1.2-24]. A timer per
connection (``loop.call_at``: a handle, a timer object and libuv's own struct) cost about
550 bytes per idle connection, a tenth of the budget of one. Here connections due in the
same second share a slot (a set) and that slot's one timer. When it fires, each connection
is looked at: one heard from since (or busy handling what it read, so silence cannot be
told) moves to the slot of its new deadline; one silent for its whole deadline expires.

Deadlines are rounded up to the next whole second: a connection is never closed early, at
most a second late. Times are ``time.monotonic()`` (what a connection stamps when it hears
from its client); the event loop's clock only schedules the slots' timers.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from typing import Protocol

__all__ = ["KeepaliveWheel", "Watched", "keepalive_deadline"]


@functools.cache  # one int object per keepalive value, not one per session
def keepalive_deadline(keepalive_s: int) -> int:
    """Seconds of silence after which a client is gone: 1.5 x keepalive, rounded up (0 = never)."""
    return -(-keepalive_s * 3 // 2)


class Watched(Protocol):
    """A connection as the wheel sees it."""

    heard_at: float  # time.monotonic() when its client was last heard from
    keepalive_slot: set[Watched] | None  # the slot it waits in, if any (kept by the wheel)

    @property
    def deadline(self) -> int:
        """Seconds of silence allowed (0: never expires)."""
        ...

    @property
    def busy(self) -> bool:
        """Whether it is handling what it read (not reading, so not silent)."""
        ...

    def expire(self) -> None:
        """Silent for its whole deadline: close it."""
        ...


class KeepaliveWheel:
    """Connections by the second their deadline falls in; each slot has one timer."""

    def __init__(self) -> None:
        self._slots: dict[int, set[Watched]] = {}

    def watch(self, connection: Watched) -> None:
        """Expire ``connection`` once silent for its deadline from now (no-op for a deadline of 0)."""
        if connection.deadline > 0:
            self._place(connection, connection.heard_at + connection.deadline)

    def forget(self, connection: Watched) -> None:
        """Stop watching ``connection`` (it ended)."""
        slot = connection.keepalive_slot
        if slot is not None:
            slot.discard(connection)
            connection.keepalive_slot = None

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())

    def _place(self, connection: Watched, due: float) -> None:
        second = math.ceil(due)
        slot = self._slots.get(second)
        if slot is None:
            slot = self._slots[second] = set()
            asyncio.get_running_loop().call_later(max(second - time.monotonic(), 0.0), self._fire, second)
        slot.add(connection)
        connection.keepalive_slot = slot

    def _fire(self, second: int) -> None:
        slot = self._slots.pop(second, None)
        if not slot:
            return
        now = time.monotonic()
        for connection in list(slot):  # expiring one may end others (their ``forget`` edits the slot)
            if connection.keepalive_slot is not slot:
                continue
            connection.keepalive_slot = None
            due = now + connection.deadline if connection.busy else connection.heard_at + connection.deadline
            if due > now:
                self._place(connection, due)
            else:
                connection.expire()
