"""Repairs a process makes in rounds after each reconnect of its NATS connection, one at a time.

Core NATS is at most once: what is published for a process while its connection is down goes
nowhere. The repairs of what such a gap loses (``cluster.inbox_resync``: the devices' events;
``cluster.session_recheck``: the ends of sign-ins) each run as rounds that follow the
connection's reconnect counter: a round begins after a reconnect, and reconnects that come while
one runs make one more round after it, never one each. Each round waits ``settle_s`` first: the
cluster's other NATS servers learn the process's subscriptions again over their routes a moment
after the reconnect, unannounced, and what is published through one of them meanwhile is lost
too. A round works in slices of ``rate * tick_s`` every ``tick_s`` (``HUBBUB_RESYNC_USERS_PER_SECOND``),
so what it asks of the API or the store is bounded by ``rate`` per node, whatever the node's size.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from cluster.connection import ConnectionState
from hubbub import cancelling

__all__ = ["RECONNECT_SETTLE_S", "RECONNECT_TICK_S", "Pause", "ReconnectRounds", "reconnected_since"]

RECONNECT_SETTLE_S = 0.5  # after a reconnect, for the other NATS servers to learn the subscriptions
RECONNECT_TICK_S = 0.05  # a slice of a round every this long

Pause = Callable[[float], Awaitable[None]]


def reconnected_since(seen: int, state: ConnectionState) -> bool:
    """Whether ``state``'s connection reconnected since it had ``seen`` reconnects (for ``wait_for``)."""
    return state.reconnects != seen


class ReconnectRounds(ABC):
    """A background task that runs ``_round`` after each reconnect, one round at a time."""

    def __init__(
        self,
        state: ConnectionState,
        *,
        name: str,
        rate: float,
        settle_s: float = RECONNECT_SETTLE_S,
        tick_s: float = RECONNECT_TICK_S,
        pause: Pause = asyncio.sleep,
    ) -> None:
        """``rate``: items a second, in slices every ``tick_s``; ``pause`` waits (tests step with it)."""
        if rate <= 0:
            raise ValueError(f"{name} rate must be positive, not {rate}")
        self._state = state
        self._name = name
        self._per_tick = max(1, int(rate * tick_s))
        self._settle_s = settle_s
        self._tick_s = tick_s
        self._pause = pause
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # rounds begun, one per reconnect or burst of them (for /metrics and tests)

    def start(self) -> None:
        """Follow the connection from now on (reconnects before this call make no round)."""
        if self._task is not None:
            raise RuntimeError(f"{self._name} already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._state.reconnects), name=self._name
        )

    async def stop(self) -> None:
        """Stop; a round under way is left unfinished (the devices go with the node)."""
        task, self._task = self._task, None
        await cancelling.stop(task)

    @property
    def running(self) -> bool:
        """Following the connection (for /healthz)."""
        return self._task is not None and not self._task.done()

    async def _run(self, seen: int) -> None:
        state = self._state
        while True:
            await state.wait_for(functools.partial(reconnected_since, seen))
            seen = state.reconnects
            self.rounds += 1
            await self._round()

    @abstractmethod
    async def _round(self) -> None:
        """One round, begun as the reconnect is seen (its ``settle_s`` wait is the round's to make)."""
