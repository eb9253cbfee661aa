"""Presence across nodes on a real 3-server NATS: grace rules, a writer that moves, a node that dies.

Broker nodes are simulated in-process, each with its own NATS connection, registry heartbeat,
``NodePresence`` (reports, resync answers, retained topics) and, when it writes, its
``PresenceWriters`` under the ``presence`` leases. What the tests assert is the sequence of
decisions written to the presence bucket, per user: waited for as they arrive, never timed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from nats.aio.msg import Msg

from cluster.connection import ClusterConnection, NatsOptions
from cluster.kv import Bucket, ensure_bucket
from cluster.leases import bucket_name
from cluster.presence_mirror import PresenceMirror, open_presence_bucket
from cluster.presence_node import NodePresence
from cluster.presence_writer import PresenceWriters
from cluster.registry import NodeDirectory, NodeHeartbeat, open_registry
from hubbub import subjects
from hubbub.presence import Publish
from hubbub.shards import ShardMap
from messaging.clock import LoopClock
from messaging.presence import PresenceTracker
from tests.messaging.doubles import FakeConnections, FakeDirectory
from tests.support.leases import freeze
from tests.support.nats import NatsCluster

GRACE_S = 0.5
SHARDS = ShardMap(presence_shards=4)
LEASE_TTL_S = 2.0
BEAT_S = 0.25
# A live node must never drop out of the registry: one that did would have its devices taken
# offline after the grace (the symptom of a 1 s TTL on a loaded two-core machine: 4 beats missed).
REGISTRY_TTL_S = 3.0
BOUND_S = 60.0  # the whole test, on a loaded machine: generous, never a measurement


@dataclass
class WatchedConnections(FakeConnections):
    """The MQTT side of a node, waking whoever waits for a retained presence change."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def set_presence(self, user_id: int, payload: bytes) -> None:
        super().set_presence(user_id, payload)
        self.changed.set()

    def statuses(self, user_id: int) -> list[object]:
        return [event["status"] for event in self.presence.get(user_id, [])]


class BucketLog:
    """Every decision written to the presence bucket, per user, in the order NATS delivered them."""

    def __init__(self) -> None:
        self.statuses: dict[int, list[str]] = {}
        self._changed = asyncio.Event()

    def __call__(self, msg: Msg) -> None:
        if msg.data:
            raw = orjson.loads(msg.data)
            self.statuses.setdefault(int(raw["user_id"]), []).append(raw["status"])
            self._changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def of(self, user_id: int) -> list[str]:
        return self.statuses.get(user_id, [])


@dataclass
class Buckets:
    registry: Bucket
    presence: Bucket
    leases: Bucket
    log: BucketLog


@pytest.fixture
async def buckets(conn: ClusterConnection, unique: str) -> AsyncIterator[Buckets]:
    """The registry, presence and lease buckets of this test alone, and a log of the decisions."""
    registry = await open_registry(conn.js, ttl_s=REGISTRY_TTL_S, replicas=3, name=f"nodes_{unique}")
    presence = await open_presence_bucket(conn.js, replicas=3, name=f"presence_{unique}")
    leases = await ensure_bucket(conn.js, bucket_name(f"presence{unique}"), ttl_s=LEASE_TTL_S, replicas=3)
    log = BucketLog()

    async def received(msg: Msg) -> None:
        log(msg)

    subscription = await conn.client.subscribe(subjects.kv_changes(presence.name), cb=received)
    await conn.client.flush()
    yield Buckets(registry, presence, leases, log)
    await subscription.unsubscribe()


def tracker(publish: Publish) -> PresenceTracker:
    """The launcher's decider factory, as a broker node would be handed it."""
    return PresenceTracker(grace_s=GRACE_S, publish=publish, clock=LoopClock())


@dataclass
class Node:
    """A simulated broker node: what the launcher would compose for presence."""

    name: str
    conn: ClusterConnection
    heartbeat: NodeHeartbeat
    directory: NodeDirectory
    connections: WatchedConnections
    mirror: PresenceMirror
    presence: NodePresence
    writers: PresenceWriters | None = None
    last_active: dict[int, int] = field(default_factory=dict)
    stopped: bool = False

    async def stop(self, *, crash: bool = False) -> None:
        """Leave cleanly, or as if killed (no goodbye: the registry and the leases find out)."""
        if self.stopped:
            return
        self.stopped = True
        if self.writers is not None:
            await self.writers.stop(release=not crash)
        await self.heartbeat.stop(deregister=not crash)
        await self.presence.close()
        await self.mirror.stop()
        await self.directory.stop()
        await self.conn.close()


StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def nodes(nats_cluster: NatsCluster, buckets: Buckets) -> AsyncIterator[StartNode]:
    """Start simulated broker nodes (``await start(name, writer=True)``); all stopped at the end."""
    started: list[Node] = []

    async def start(name: str, *, writer: bool = True, reconcile_s: float = 30.0) -> Node:
        conn = await ClusterConnection.connect(NatsOptions(servers=tuple(nats_cluster.urls), name=name))
        heartbeat = NodeHeartbeat(buckets.registry, node_id=name, kind="broker", interval_s=BEAT_S)
        directory = NodeDirectory(buckets.registry, refresh_s=BEAT_S)
        connections = WatchedConnections()
        mirror = PresenceMirror(conn, buckets.presence, SHARDS, last_active=FakeDirectory().last_active)
        presence = NodePresence(conn, node_id=name, shards=SHARDS, connections=connections, mirror=mirror)
        node = Node(name, conn, heartbeat, directory, connections, mirror, presence)
        started.append(node)
        await heartbeat.start()
        await directory.start()
        await mirror.start()
        await presence.start()
        if writer:
            node.writers = PresenceWriters(
                conn,
                buckets.presence,
                directory,
                leases=buckets.leases,
                owner_id=name,
                shards=SHARDS.presence_shards,
                lease_ttl_s=LEASE_TTL_S,
                new_decider=tracker,
                record_last_active=node.last_active.__setitem__,
                reconcile_s=reconcile_s,
                dead_after_s=BEAT_S * 2,
            )
            await node.writers.start()
        await conn.client.flush()
        return node

    yield start
    for node in started:
        with contextlib.suppress(Exception):
            await node.stop()


async def all_shards_written(*writers: Node) -> None:
    """Wait until the given nodes' writers hold and have rebuilt every shard between them."""
    every = set(range(SHARDS.presence_shards))
    while True:
        held = [node.writers.shards for node in writers if node.writers is not None]
        if set().union(*held) == every and sum(map(len, held)) == len(every):
            return
        await next(node.writers for node in writers if node.writers is not None).leases.next_tick()


async def registered(node: Node, *names: str) -> None:
    """Wait until ``node``'s view of the registry lists the broker nodes ``names``."""
    keys = {f"broker.{name}" for name in names}
    await node.directory.wait_for(lambda live: keys <= set(live))


async def test_a_user_on_two_nodes_is_online_until_both_are_gone_with_one_change_per_grace(
    nodes: StartNode, buckets: Buckets
) -> None:
    start = nodes
    async with asyncio.timeout(BOUND_S):
        a: Node = await start("a")
        b: Node = await start("b", writer=False)
        await registered(a, "a", "b")
        await all_shards_written(a)
        log = buckets.log
        a.presence.device_connected(7, "phone")
        b.presence.device_connected(7, "laptop")
        await log.until(lambda: log.of(7) == ["online"])
        a.presence.device_disconnected(7, "phone")
        a.presence.device_connected(7, "phone")  # churn on a: nothing to publish
        a.presence.device_disconnected(7, "phone")
        # A barrier: user 8's offline falls due after anything 7's churn could have caused.
        a.presence.device_connected(8, "tablet")
        await log.until(lambda: log.of(8) == ["online"])
        a.presence.device_disconnected(8, "tablet")
        await log.until(lambda: log.of(8) == ["online", "offline"])
        assert log.of(7) == ["online"]  # b still holds the laptop
        b.presence.device_disconnected(7, "laptop")
        await log.until(lambda: len(log.of(7)) == 2)
        a.presence.device_connected(7, "phone")  # back within a grace period of the offline
        await log.until(lambda: len(log.of(7)) == 3)
    assert log.of(7) == ["online", "offline", "online"]
    assert set(a.last_active) == {7, 8}


async def test_nodes_keep_the_retained_presence_their_devices_watch(
    nodes: StartNode, buckets: Buckets
) -> None:
    start = nodes
    async with asyncio.timeout(BOUND_S):
        a: Node = await start("a")
        b: Node = await start("b", writer=False)
        await registered(a, "a", "b")
        await all_shards_written(a)
        first = orjson.loads(await b.presence.snapshot(7))  # a device on b subscribed to presence/7
        assert first == {"user_id": "7", "status": "offline", "last_active_at": None}
        a.presence.device_connected(7, "phone")
        a.presence.device_connected(9, "phone")  # nobody watches 9 on b
        await buckets.log.until(lambda: buckets.log.of(9) == ["online"] and buckets.log.of(7) == ["online"])
        while b.connections.statuses(7) != ["online"]:
            b.connections.changed.clear()
            await b.connections.changed.wait()
        await b.mirror.refresh()
        assert b.presence.online([7, 9, 10]) == {7, 9}
        assert 9 not in b.connections.presence  # not retained where nobody watches
        assert orjson.loads(await b.presence.snapshot(9))["status"] == "online"
        late = await start("late", writer=False)  # a node that starts now reads who is online
        assert late.presence.online([7, 9, 10]) == {7, 9}


@pytest.mark.parametrize("crash", [False, True], ids=["stopped", "crashed"])
async def test_a_shard_that_moves_to_another_writer_is_rebuilt_without_a_flap(
    nodes: StartNode, buckets: Buckets, crash: bool
) -> None:
    start = nodes
    log = buckets.log
    async with asyncio.timeout(BOUND_S):
        first: Node = await start("first")
        holder: Node = await start("holder", writer=False)
        await registered(first, "first", "holder")
        await all_shards_written(first)
        users = range(20, 40)  # spread over every shard
        assert {SHARDS.user(user) for user in users} == set(range(SHARDS.presence_shards))
        for user in users:
            holder.presence.device_connected(user, f"d{user}")
        await log.until(lambda: all(log.of(user) == ["online"] for user in users))
        second: Node = await start("second")
        await registered(second, "holder", "second")
        await first.stop(crash=crash)
        await all_shards_written(second)
        # A barrier: a user whose offline falls due after any flap of the others would have.
        holder.presence.device_connected(50, "x")
        await log.until(lambda: log.of(50) == ["online"])
        holder.presence.device_disconnected(50, "x")
        await log.until(lambda: log.of(50) == ["online", "offline"])
        assert all(log.of(user) == ["online"] for user in users)
        assert second.writers is not None
        for user in users:  # the new writer knows the devices: a disconnect is decided from them
            assert second.writers.online(SHARDS.user(user), [user]) == {user}
        holder.presence.device_disconnected(20, "d20")
        await log.until(lambda: log.of(20) == ["online", "offline"])


async def test_a_node_that_stops_heartbeating_takes_its_users_offline_after_the_grace_period(
    nodes: StartNode, buckets: Buckets
) -> None:
    start = nodes
    log = buckets.log
    async with asyncio.timeout(BOUND_S):
        writer: Node = await start("writer")
        doomed: Node = await start("doomed", writer=False)
        await registered(writer, "writer", "doomed")
        await all_shards_written(writer)
        doomed.presence.device_connected(7, "phone")
        doomed.presence.device_connected(8, "phone")
        writer.presence.device_connected(8, "laptop")  # 8 has a device elsewhere too
        await log.until(lambda: log.of(7) == ["online"] and log.of(8) == ["online"])
        await doomed.stop(crash=True)  # killed: no disconnects, no goodbye
        await log.until(lambda: log.of(7) == ["online", "offline"])
        # A barrier: user 60's offline falls due after any flap of 8 would have.
        writer.presence.device_connected(60, "x")
        await log.until(lambda: log.of(60) == ["online"])
        writer.presence.device_disconnected(60, "x")
        await log.until(lambda: log.of(60) == ["online", "offline"])
        assert log.of(8) == ["online"]  # its laptop on the writer's node is still there
        writer.presence.device_disconnected(8, "laptop")
        await log.until(lambda: log.of(8) == ["online", "offline"])
    assert writer.writers is not None
    assert writer.writers.dead_nodes >= 1


def lose_disconnect(node: Node, user_id: int, device_id: str) -> None:
    """The device left ``node`` but its report never reached the writer (core NATS lost it)."""
    shard = SHARDS.user(user_id)
    node.presence._held[shard].discard((user_id, device_id))
    node.presence._seq[shard] += 1


async def test_a_lost_report_is_repaired_at_the_next_change_from_that_node(
    nodes: StartNode, buckets: Buckets
) -> None:
    log = buckets.log
    neighbour = next(user for user in range(8, 1000) if SHARDS.user(user) == SHARDS.user(7))
    async with asyncio.timeout(BOUND_S):
        writer = await nodes("writer", reconcile_s=3600.0)  # no reconciliation during the test
        holder = await nodes("holder", writer=False)
        await registered(writer, "writer", "holder")
        await all_shards_written(writer)
        holder.presence.device_connected(7, "phone")
        await log.until(lambda: log.of(7) == ["online"])
        lose_disconnect(holder, 7, "phone")
        holder.presence.device_connected(neighbour, "x")  # its number shows one went missing
        await log.until(lambda: log.of(7) == ["online", "offline"])


async def test_a_lost_last_report_is_repaired_by_the_reconciliation(
    nodes: StartNode, buckets: Buckets
) -> None:
    log = buckets.log
    async with asyncio.timeout(BOUND_S):
        writer = await nodes("writer", reconcile_s=GRACE_S)
        holder = await nodes("holder", writer=False)
        await registered(writer, "writer", "holder")
        await all_shards_written(writer)
        holder.presence.device_connected(7, "phone")
        await log.until(lambda: log.of(7) == ["online"])
        lose_disconnect(holder, 7, "phone")
        await log.until(lambda: log.of(7) == ["online", "offline"])


async def test_a_paused_writer_past_its_lease_writes_nothing_over_its_successor(
    nodes: StartNode, buckets: Buckets
) -> None:
    log = buckets.log
    async with asyncio.timeout(BOUND_S):
        stale = await nodes("stale")
        holder = await nodes("holder", writer=False)
        await registered(stale, "stale", "holder")
        await all_shards_written(stale)
        holder.presence.device_connected(7, "phone")
        await log.until(lambda: log.of(7) == ["online"])
        assert stale.writers is not None
        freeze(stale.writers.leases)  # paused: it keeps its subscriptions and believes what it believed
        successor = await nodes("successor")
        await all_shards_written(successor)
        assert stale.writers._writers  # still deciding, unaware
        writes = stale.writers.writes
        holder.presence.device_disconnected(7, "phone")  # both decide offline after the grace period
        await log.until(lambda: log.of(7) == ["online", "offline"])
        holder.presence.device_connected(8, "x")  # a barrier past the stale writer's decision
        await log.until(lambda: log.of(8) == ["online"])
        holder.presence.device_disconnected(8, "x")
        await log.until(lambda: log.of(8) == ["online", "offline"])
    assert log.of(7) == ["online", "offline"]  # written once, by the successor
    assert stale.writers.online(SHARDS.user(7), [7]) == set()  # the stale writer saw it go too...
    assert stale.writers.writes == writes  # ...and wrote nothing
