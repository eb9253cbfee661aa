"""The node registry: who is alive, where to connect, how loaded; and service discovery.

Every process heartbeats one record into the KV bucket ``hubbub_nodes`` under ``<kind>.<node_id>``
(``NodeHeartbeat``): its endpoints, its connection count and whether its own health check
passes. The bucket's max age is a few heartbeats, so the record of a process that dies (or is
paused, or cut off from NATS) ages out within ``ttl_s`` of its last heartbeat: no wall clock is
compared across machines (``updated_at`` is informational, from an injectable clock).

``NodeDirectory`` reads the registry as snapshots refreshed every ``refresh_s`` (aged-out entries
wake no watcher on NATS 2.9, see ``cluster.kv``) and answers ``brokers()`` (least loaded first) from
the last one without a round trip: login asks it for every token it issues, and a device whose
node died asks it through ``GET /v1/brokers``. A node shows up as dead at most
``ttl_s + refresh_s`` after its last heartbeat.

Caveat for what consumes "node died" (the presence writer): while the registry's stream has no
leader (the kill -9 of the NATS server leading it: 4.5-12 s on 2.9) no heartbeat lands, the
replicas keep expiring records, and right after the election every record may be gone until the
nodes' next heartbeats. A refresh that fails keeps the last view, but one in that window sees
nodes missing that are alive: act on a node's absence only once it has lasted a heartbeat
interval past a refresh that succeeded, or confirm with the node itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import orjson
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from cluster.kv import Bucket, ensure_bucket
from hubbub import cancelling

__all__ = ["BUCKET", "Endpoints", "NodeDirectory", "NodeHeartbeat", "NodeInfo", "open_registry"]

logger = logging.getLogger(__name__)

BUCKET = "hubbub_nodes"
BROKER = "broker"
_TOKEN = re.compile(r"^[-_=A-Za-z0-9]+$")
_TRANSIENT = (NatsError, TimeoutError, OSError)


async def open_registry(js: JetStreamContext, *, ttl_s: float, replicas: int, name: str = BUCKET) -> Bucket:
    """The registry bucket (created with max age ``ttl_s`` if absent)."""
    return await ensure_bucket(js, name, ttl_s=ttl_s, replicas=replicas)


@dataclass(frozen=True)
class Endpoints:
    """Where devices reach a broker node (``None`` for nodes that take no device connections).

    ``http_url`` is the process's own HTTP port (``/healthz``, ``/metrics``; the REST API on an
    API node), for operators and tools.
    """

    mqtt_host: str | None = None
    mqtt_port: int | None = None
    ws_url: str | None = None
    http_url: str | None = None


@dataclass(frozen=True)
class NodeInfo:
    """One node's latest heartbeat."""

    node_id: str
    kind: str
    endpoints: Endpoints = field(default_factory=Endpoints)
    connections: int = 0
    healthy: bool = True
    updated_at: float = 0.0
    snowflake_id: int | None = None  # the node id inside the Snowflake ids it makes, if it makes any

    @property
    def key(self) -> str:
        """The node's key in the registry bucket."""
        return f"{self.kind}.{self.node_id}"

    def to_json(self) -> bytes:
        """The record as stored."""
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> NodeInfo:
        """A stored record (``ValueError`` if it is not one)."""
        try:
            raw = orjson.loads(data)
            return cls(
                node_id=str(raw["node_id"]),
                kind=str(raw["kind"]),
                endpoints=Endpoints(**raw.get("endpoints") or {}),
                connections=int(raw.get("connections", 0)),
                healthy=bool(raw.get("healthy", True)),
                updated_at=float(raw.get("updated_at", 0.0)),
                snowflake_id=None if raw.get("snowflake_id") is None else int(raw["snowflake_id"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a node record: {exc}") from exc


class NodeHeartbeat:
    """Keeps this node's record fresh: every ``interval_s``, with its current load and health."""

    def __init__(
        self,
        bucket: Bucket,
        *,
        node_id: str,
        kind: str,
        interval_s: float,
        endpoints: Endpoints | None = None,
        connections: Callable[[], int] = lambda: 0,
        healthy: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        snowflake_id: int | None = None,
    ) -> None:
        for name, value in (("node_id", node_id), ("kind", kind)):
            if not _TOKEN.match(value):
                raise ValueError(f"{name} {value!r} must be letters, digits, '-', '_' or '='")
        self.bucket = bucket
        self.node_id = node_id
        self.kind = kind
        self.interval_s = interval_s
        self.endpoints = endpoints or Endpoints()
        self._connections = connections
        self._healthy = healthy
        self._clock = clock
        self.snowflake_id = snowflake_id
        self._task: asyncio.Task[None] | None = None

    def record(self) -> NodeInfo:
        """What the next heartbeat says."""
        return NodeInfo(
            node_id=self.node_id,
            kind=self.kind,
            endpoints=self.endpoints,
            connections=self._connections(),
            healthy=self._healthy(),
            updated_at=self._clock(),
            snowflake_id=self.snowflake_id,
        )

    async def beat(self) -> None:
        """Write the record now."""
        record = self.record()
        await self.bucket.kv.put(record.key, record.to_json())

    async def start(self) -> None:
        """Register now (fails if NATS does not take it), then keep beating in the background."""
        if self._task is not None:
            raise RuntimeError("heartbeat already started")
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"heartbeat-{self.node_id}")

    async def stop(self, *, deregister: bool = True) -> None:
        """Stop beating; with ``deregister`` the node leaves the registry at once."""
        task, self._task = self._task, None
        await cancelling.stop(task)
        if deregister:
            with contextlib.suppress(*_TRANSIENT):
                await self.bucket.kv.delete(f"{self.kind}.{self.node_id}")

    @property
    def running(self) -> bool:
        """The heartbeat loop is alive (for /healthz)."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.beat()
            except _TRANSIENT as exc:
                logger.warning("heartbeat of %s failed (%r); retrying", self.node_id, exc)


class NodeDirectory:
    """The live nodes as of the last snapshot, refreshed every ``refresh_s``; service discovery."""

    def __init__(self, bucket: Bucket, *, refresh_s: float) -> None:
        self.bucket = bucket
        self.refresh_s = refresh_s
        self._nodes: dict[str, NodeInfo] = {}
        self._refreshed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def nodes(self) -> dict[str, NodeInfo]:
        """Key -> record of every node alive at the last refresh."""
        return dict(self._nodes)

    def brokers(self) -> list[NodeInfo]:
        """The healthy broker nodes, fewest connections first (ties by id): where devices go."""
        brokers = [node for node in self._nodes.values() if node.kind == BROKER and node.healthy]
        return sorted(brokers, key=lambda node: (node.connections, node.node_id))

    def best_broker(self) -> NodeInfo | None:
        """The healthy broker node with the fewest connections (ties by id), or ``None``."""
        return next(iter(self.brokers()), None)

    async def refresh(self) -> None:
        """Read the registry now."""
        nodes: dict[str, NodeInfo] = {}
        for key, entry in (await self.bucket.latest()).items():
            try:
                nodes[key] = NodeInfo.from_json(entry.value or b"")
            except ValueError as exc:
                logger.warning("ignoring registry entry %s: %s", key, exc)
        self._nodes = nodes
        async with self._refreshed:
            self._refreshed.notify_all()

    async def wait_for(self, predicate: Callable[[dict[str, NodeInfo]], bool]) -> dict[str, NodeInfo]:
        """Wait (across refreshes) until ``predicate`` holds for the live nodes; bound it by a timeout."""
        async with self._refreshed:
            await self._refreshed.wait_for(lambda: predicate(self._nodes))
            return dict(self._nodes)

    async def start(self) -> None:
        """Read once (fails if NATS does not answer), then refresh in the background."""
        if self._task is not None:
            raise RuntimeError("directory already started")
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="node-directory")

    async def stop(self) -> None:
        """Stop refreshing."""
        task, self._task = self._task, None
        await cancelling.stop(task)

    @property
    def running(self) -> bool:
        """The refresh loop is alive (for /healthz)."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except _TRANSIENT as exc:
                logger.warning("registry refresh failed (%r); keeping the last view", exc)
