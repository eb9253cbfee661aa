"""What every process of a cluster has: one NATS connection, a supervisor, health, the registry.

``cluster_node(settings, kind)`` connects to NATS (``HUBBUB_NATS_URL``) under the process's
name (``HUBBUB_NODE_NAME``), opens the node registry and runs a ``Supervisor`` for the role's
consumer loops. The role then adds what it needs: lease groups (``lease_group``), the registry
heartbeat with its endpoints and load (``register``), the directory of live nodes
(``directory``), and serves ``/healthz`` and ``/metrics`` (``routes``).

Leaving the context is the graceful shutdown, in this order: deregister (no more logins are
sent here), release every lease (``on_lost`` stops the shard's work before anyone else can take
it), stop the directory and the supervised loops, then drain and close the NATS connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from nats.errors import Error as NatsError
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.routing import Route

from cluster.connection import ClusterConnection, NatsOptions, parse_servers
from cluster.kv import Bucket
from cluster.leases import ShardCallback, ShardLeases
from cluster.registry import Endpoints, NodeDirectory, NodeHeartbeat, open_registry
from config import Settings
from hubbub import cancelling
from hubbub.errors import SettingsError
from launcher.health import ConsumerLag, Health, NodeCollector, health_routes
from launcher.http import bind_socket
from launcher.serving import http_url, serve_until_stopped, uvicorn_server
from launcher.supervisor import Supervisor

__all__ = ["ClusterNode", "cluster_node", "retrying"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Start-up against a NATS cluster that is itself starting (or electing leaders under load):
# creating a replicated stream or bucket can time out and succeed on the next try.
_SETUP_TIMEOUT_S = 120.0
_SETUP_PAUSE_S = 1.0
_TRANSIENT = (NatsError, TimeoutError, OSError)


async def retrying(what: str, make: Callable[[], Awaitable[T]], *, timeout_s: float = _SETUP_TIMEOUT_S) -> T:
    """``make()``, tried again while NATS answers with a transient failure, for ``timeout_s`` at most.

    For start-up steps that are safe to repeat (creating what exists is a no-op); a
    configuration conflict (``ClusterConfigError``) is not transient and fails at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await make()
        except _TRANSIENT as exc:
            if time.monotonic() + _SETUP_PAUSE_S > deadline:
                raise
            logger.warning("%s failed (%r); trying again", what, exc)
            await asyncio.sleep(_SETUP_PAUSE_S)


# Heartbeats (and directory refreshes) per registry TTL: a record survives two lost beats.
_BEATS_PER_TTL = 3
_LOOP_CHECK_S = 5.0


@dataclass
class ClusterNode:
    """One process of the cluster: its connection, loops, health and metrics, and its registry."""

    settings: Settings
    kind: str
    name: str
    connection: ClusterConnection
    registry: Bucket
    supervisor: Supervisor = field(default_factory=lambda: Supervisor(check_interval_s=_LOOP_CHECK_S))
    health: Health = field(default_factory=Health)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    collector: NodeCollector = field(init=False)
    _leases: list[ShardLeases] = field(default_factory=list)
    _heartbeat: NodeHeartbeat | None = None
    _directory: NodeDirectory | None = None

    def __post_init__(self) -> None:
        self.collector = NodeCollector(
            self.name, self.kind, connection=self.connection, supervisor=self.supervisor
        )
        self.metrics.register(self.collector)
        self.health.watch_connection(self.connection)
        self.health.watch_supervisor(self.supervisor)

    async def lease_group(
        self,
        group: str,
        shards: int,
        *,
        on_gained: ShardCallback | None = None,
        on_lost: ShardCallback | None = None,
        lag_stream: str | None = None,
    ) -> ShardLeases:
        """Join lease group ``group`` over ``shards`` shards; released when the node stops.

        ``lag_stream``: the JetStream stream whose per-shard consumers ``/metrics`` shows the
        lag of, for the shards owned here.
        """
        leases = await retrying(
            f"opening the {group} leases",
            lambda: ShardLeases.open(
                self.connection.js,
                group=group,
                replicas=self.settings.nats_replicas,
                owner_id=self.name,
                shards=shards,
                ttl_s=self.settings.lease_ttl_s,
                on_gained=on_gained,
                on_lost=on_lost,
            ),
        )
        await leases.start()
        self._leases.append(leases)
        self.supervisor.watch(f"{group}-leases", running=lambda: leases.running)
        self.collector.leases[group] = leases
        if lag_stream is not None:
            self.collector.lags.append(ConsumerLag(self.connection, lag_stream, lambda: leases.owned))
        return leases

    async def register(
        self,
        endpoints: Endpoints,
        *,
        connections: Callable[[], int] = lambda: 0,
        snowflake_id: int | None = None,
    ) -> None:
        """Heartbeat into the registry from now on (refused if another live node makes our ids)."""
        if snowflake_id is not None:
            await self._refuse_a_shared_snowflake_id(snowflake_id)
        heartbeat = NodeHeartbeat(
            self.registry,
            node_id=self.name,
            kind=self.kind,
            interval_s=self.settings.registry_ttl_s / _BEATS_PER_TTL,
            endpoints=endpoints,
            connections=connections,
            healthy=lambda: self.health.healthy,
            snowflake_id=snowflake_id,
        )
        await retrying("registering", heartbeat.beat)
        await heartbeat.start()
        self._heartbeat = heartbeat
        self.supervisor.watch("registry-heartbeat", running=lambda: heartbeat.running)

    async def directory(self) -> NodeDirectory:
        """The live nodes of the cluster (started on first use, refreshed in the background)."""
        if self._directory is None:
            directory = NodeDirectory(self.registry, refresh_s=self.settings.registry_ttl_s / _BEATS_PER_TTL)
            await retrying("reading the registry", directory.refresh)
            await directory.start()
            self._directory = directory
            self.supervisor.watch("node-directory", running=lambda: directory.running)
        return self._directory

    def routes(self) -> list[Route]:
        """``/healthz`` and ``/metrics`` of this node."""
        return health_routes(self.health, self.render_metrics)

    async def serve_health(self, *, snowflake_id: int | None = None) -> None:
        """Register, then serve ``/healthz`` and ``/metrics`` on ``http_port`` until stopped.

        For a process with no other HTTP side; it announces ``hubbub ready: http=...``.
        """
        sock = bind_socket(self.settings.bind, self.settings.http_port)
        await self.register(Endpoints(http_url=http_url(sock)), snowflake_id=snowflake_id)
        app = Starlette(routes=self.routes())
        await serve_until_stopped(uvicorn_server(app, self.settings), sock)

    async def render_metrics(self) -> bytes:
        """The Prometheus text of this node, consumer lags sampled now."""
        await asyncio.gather(*(lag.sample() for lag in self.collector.lags))
        return generate_latest(self.metrics)

    def render_metrics_now(self) -> bytes:
        """The Prometheus text with the lags as last sampled (for a synchronous caller)."""
        return generate_latest(self.metrics)

    async def leave(
        self, what: str, goodbye: Callable[[], Awaitable[object]], alone: Callable[[], Awaitable[object]]
    ) -> None:
        """Stop a part saying ``goodbye`` to NATS (release, deregister), or ``alone`` without NATS.

        The goodbye runs within the process's one shutdown budget (``ClusterConnection.goodbye``);
        skipped or cut short, the part stops locally (``alone``) and what it held runs out by TTL.
        ``goodbye`` must leave ``alone`` something to finish if it is cut short.
        """
        if not await self.connection.goodbye(what, goodbye):
            await alone()

    async def close(self) -> None:
        """Deregister, release every lease, stop the directory (idempotent; bounded without NATS)."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            await self.leave("deregistering", heartbeat.stop, lambda: heartbeat.stop(deregister=False))
        leases, self._leases = self._leases, []
        for group in leases:
            await self.leave("releasing leases", group.stop, functools.partial(group.stop, release=False))
        directory, self._directory = self._directory, None
        if directory is not None:
            await directory.stop()

    async def _refuse_a_shared_snowflake_id(self, snowflake_id: int) -> None:
        directory = NodeDirectory(self.registry, refresh_s=self.settings.registry_ttl_s)
        await retrying("reading the registry", directory.refresh)
        for node in directory.nodes.values():
            if node.snowflake_id == snowflake_id and node.node_id != self.name:
                raise SettingsError(
                    f"HUBBUB_NODE_ID {snowflake_id} is used by {node.kind} {node.node_id}, alive in the "
                    "cluster: every process of a cluster needs its own (0..1023)"
                )


@asynccontextmanager
async def cluster_node(settings: Settings, kind: str) -> AsyncIterator[ClusterNode]:
    """Connect this process to the cluster as a ``kind`` node; shut it down gracefully on exit."""
    if settings.nats_url is None:
        raise SettingsError(f"`hubbub {kind}` in a cluster needs HUBBUB_NATS_URL")
    name = settings.resolved_node_name
    connection = await ClusterConnection.connect(
        NatsOptions(servers=parse_servers(settings.nats_url), name=f"{kind}-{name}")
    )
    try:
        registry = await retrying(
            "opening the registry",
            lambda: open_registry(
                connection.js, ttl_s=settings.registry_ttl_s, replicas=settings.nats_replicas
            ),
        )
        node = ClusterNode(settings, kind, name, connection, registry)
        async with asyncio.TaskGroup() as group:
            supervising = group.create_task(node.supervisor.run(), name="supervisor")
            try:
                yield node
            finally:
                await node.close()
                cancelling.cancel(supervising)
    finally:
        await connection.close()
    logger.info("%s %s left the cluster", kind, name)
