"""One supervised NATS connection per process, its JetStream context, and KV buckets.

nats-py reconnects by itself; what it does not do is say so anywhere a health check can see.
``ClusterConnection`` keeps the state (connected, reconnects, last error) that ``/healthz`` and
``/metrics`` will read, logs every transition, and retries forever by default: a node outlives a
NATS server restart or a rolling upgrade without being restarted itself. Dead connections are
found by the client's PINGs (``ping_interval_s`` x ``max_outstanding_pings``).

A node that stops says goodbye over this connection (deregisters, releases its leases, drains)
through ``goodbye``: every such step within one shutdown budget for the process
(``shutdown_timeout_s``), skipped once NATS has shown it is not there. Without NATS the node
still exits, bounded, with one warning; what it could not hand back runs out by its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

__all__ = ["ClusterConfigError", "ClusterConnection", "ConnectionState", "NatsOptions", "parse_servers"]

logger = logging.getLogger(__name__)


class ClusterConfigError(Exception):
    """The cluster's NATS side is not what this code needs (a bucket configured differently)."""


def parse_servers(url: str) -> tuple[str, ...]:
    """The server URLs of a comma-separated ``HUBBUB_NATS_URL``."""
    servers = tuple(part.strip() for part in url.split(",") if part.strip())
    if not servers:
        raise ClusterConfigError("no NATS server URL given")
    return servers


@dataclass(frozen=True)
class NatsOptions:
    """How to connect and how hard to hold on (reconnect forever by default)."""

    servers: tuple[str, ...]
    name: str
    connect_timeout_s: float = 2.0
    reconnect_wait_s: float = 0.5
    max_reconnect_attempts: int = -1  # -1: forever; a node never gives up on its cluster
    ping_interval_s: float = 5.0
    max_outstanding_pings: int = 2
    request_timeout_s: float = 5.0  # JetStream API calls (KV reads and writes included)
    # Everything a stopping node still says to NATS (deregister, release), together; and, on its
    # own, draining the connection.
    shutdown_timeout_s: float = 15.0


@dataclass
class ConnectionState:
    """What the supervision saw, for health checks and metrics, and a way to wait for a change."""

    connected: bool = False
    reconnects: int = 0
    disconnects: int = 0
    last_error: str | None = None
    closing: bool = False
    closed: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition, repr=False)
    _on_reconnect: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every reconnect, within nats-py's reconnected callback.

        For what must not wait for a task's turn, like forgetting a cache whose invalidations
        the gap may have lost: nothing read after the reconnect comes from the stale cache.
        """
        self._on_reconnect.append(callback)

    def reconnected(self) -> None:
        """Count a reconnect and run the ``on_reconnect`` callbacks (one failing stops no other)."""
        self.connected = True
        self.reconnects += 1
        for callback in self._on_reconnect:
            try:
                callback()
            except Exception:
                logger.exception("a reconnect callback failed")

    async def changed(self) -> None:
        """Wake whoever waits in ``wait_for``."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[ConnectionState], bool]) -> None:
        """Wait until ``predicate`` holds for this state (bound it by a timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))


class ClusterConnection:
    """A connected NATS client with its JetStream context and observed state."""

    def __init__(self, client: Client, options: NatsOptions, state: ConnectionState) -> None:
        self.client = client
        self.options = options
        self.state = state
        self.js: JetStreamContext = client.jetstream(timeout=options.request_timeout_s)
        self._goodbye_left_s = options.shutdown_timeout_s  # of the one budget for every goodbye
        self._unreachable: str | None = None  # why the goodbyes are skipped
        self._said_unreachable = False

    @classmethod
    async def connect(cls, options: NatsOptions) -> ClusterConnection:
        """Connect to any of ``options.servers``; fails if none answers within the timeout."""
        state = ConnectionState()

        async def disconnected() -> None:
            state.connected = False
            if state.closing:
                return
            state.disconnects += 1
            logger.warning("NATS connection %s lost; reconnecting", options.name)
            await state.changed()

        async def reconnected() -> None:
            state.reconnected()
            logger.info("NATS connection %s re-established to %s", options.name, client.connected_url)
            await state.changed()

        async def errored(exc: Exception) -> None:
            state.last_error = f"{type(exc).__name__}: {exc}"
            logger.warning("NATS connection %s: %s", options.name, state.last_error)

        async def closed() -> None:
            state.connected = False
            state.closed = True
            logger.info("NATS connection %s closed", options.name)
            await state.changed()

        client = await nats.connect(
            servers=list(options.servers),
            name=options.name,
            connect_timeout=options.connect_timeout_s,
            reconnect_time_wait=options.reconnect_wait_s,
            max_reconnect_attempts=options.max_reconnect_attempts,
            ping_interval=options.ping_interval_s,
            max_outstanding_pings=options.max_outstanding_pings,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=errored,
            closed_cb=closed,
        )
        state.connected = True
        logger.info("NATS connection %s up to %s", options.name, client.connected_url)
        return cls(client, options, state)

    @property
    def healthy(self) -> bool:
        """Connected now (a reconnect in progress is not healthy)."""
        return self.state.connected and self.client.is_connected

    async def goodbye(self, what: str, step: Callable[[], Awaitable[object]]) -> bool:
        """Run ``step``, something a stopping node tells NATS, within the shutdown budget.

        The budget (``shutdown_timeout_s``) is one for all the process's goodbyes together
        (what a node does locally between them, like settling batches, is not counted: it is
        bounded on its own). ``False`` if the step was
        skipped or cut short: NATS is (or turned out to be) unreachable, said once at WARNING
        with what was left unsaid; the caller then stops its part locally.
        """
        if self._unreachable is None and self.healthy:
            loop = asyncio.get_running_loop()
            began = loop.time()
            try:
                async with asyncio.timeout(self._goodbye_left_s):
                    await step()
            except (TimeoutError, NatsError, OSError) as exc:
                self._unreachable = _why(exc)
            else:
                return True
            finally:
                self._goodbye_left_s = max(0.0, self._goodbye_left_s - (loop.time() - began))
        self._say_unreachable(what)
        return False

    def _say_unreachable(self, what: str) -> None:
        """Once per process at WARNING (the first step left unsaid), at DEBUG after."""
        if self._unreachable is None:
            self._unreachable = "not connected"
        elif self._said_unreachable:
            logger.debug("NATS unreachable at shutdown: skipped %s", what)
            return
        self._said_unreachable = True
        logger.warning(
            "NATS unreachable at shutdown (%s) while %s: leaving without the rest of the goodbye; "
            "this node's registry entry and leases run out by their TTL",
            self._unreachable,
            what,
        )

    async def close(self) -> None:
        """Flush what is pending and close (drained, bounded; closed at once without NATS)."""
        self.state.closing = True
        if self.client.is_closed:
            return
        if self._unreachable is None and self.healthy:
            try:
                async with asyncio.timeout(self.options.shutdown_timeout_s):
                    await self.client.drain()
            except (TimeoutError, NatsError, OSError) as exc:
                self._unreachable = _why(exc)
            else:
                return
        self._say_unreachable("draining the connection")
        # A connection that cannot drain is closed without it: nothing pending can reach NATS.
        # (nats-py's close writes what it buffered while reconnecting into the dead socket: uvloop
        # refuses with RuntimeError, after the client's tasks were cancelled.)
        with contextlib.suppress(TimeoutError, NatsError, OSError, RuntimeError):
            async with asyncio.timeout(self.options.connect_timeout_s):
                await self.client.close()


def _why(exc: BaseException) -> str:
    """``TimeoutError`` or ``ConnectionReconnectingError: nats: connection reconnecting``."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
