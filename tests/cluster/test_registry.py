"""The node registry against a real 3-server NATS: discovery by load, and dead nodes leaving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cluster.connection import ClusterConnection
from cluster.kv import Bucket
from cluster.registry import Endpoints, NodeDirectory, NodeHeartbeat, NodeInfo, open_registry

TTL_S = 2.0
BEAT_S = 0.5
BOUND_S = 60.0


@pytest.fixture
async def registry(conn: ClusterConnection, unique: str) -> Bucket:
    return await open_registry(conn.js, ttl_s=TTL_S, replicas=3, name=f"nodes_{unique}")


@pytest.fixture
async def directory(registry: Bucket) -> AsyncIterator[NodeDirectory]:
    view = NodeDirectory(registry, refresh_s=BEAT_S / 2)
    await view.start()
    yield view
    await view.stop()


class Node:
    """A node's heartbeat with a load the test sets."""

    def __init__(self, registry: Bucket, node_id: str, kind: str = "broker", connections: int = 0) -> None:
        self.connections = connections
        self.healthy = True
        self.heartbeat = NodeHeartbeat(
            registry,
            node_id=node_id,
            kind=kind,
            interval_s=BEAT_S,
            endpoints=Endpoints("127.0.0.1", 1883, f"ws://127.0.0.1:8000/mqtt?{node_id}"),
            connections=lambda: self.connections,
            healthy=lambda: self.healthy,
        )


def best_is(directory: NodeDirectory, node_id: str) -> bool:
    best = directory.best_broker()
    return best is not None and best.node_id == node_id


async def test_login_is_sent_to_the_healthy_broker_with_the_fewest_connections(
    registry: Bucket, directory: NodeDirectory
) -> None:
    busy, quiet = Node(registry, "busy", connections=50), Node(registry, "quiet", connections=7)
    idle_persister = Node(registry, "p1", kind="persister")
    nodes = (busy, quiet, idle_persister)
    async with asyncio.timeout(BOUND_S):
        for node in nodes:
            await node.heartbeat.start()
        await directory.wait_for(lambda live: len(live) == 3)
        assert best_is(directory, "quiet")
        best = directory.best_broker()
        assert best is not None
        assert best.endpoints == Endpoints("127.0.0.1", 1883, "ws://127.0.0.1:8000/mqtt?quiet")
        quiet.connections = 80  # load moves: the next heartbeat says so
        await directory.wait_for(lambda _: best_is(directory, "busy"))
        busy.healthy = False  # a node failing its own health check takes no logins
        await directory.wait_for(lambda _: best_is(directory, "quiet"))
        for node in nodes:
            await node.heartbeat.stop()


async def test_a_node_that_stops_heartbeating_leaves_the_registry(
    registry: Bucket, directory: NodeDirectory
) -> None:
    survivor, doomed = Node(registry, "survivor", connections=10), Node(registry, "doomed", connections=1)
    async with asyncio.timeout(BOUND_S):
        await survivor.heartbeat.start()
        await doomed.heartbeat.start()
        await directory.wait_for(lambda _: best_is(directory, "doomed"))
        await doomed.heartbeat.stop(deregister=False)  # as if killed: no goodbye
        live = await directory.wait_for(lambda live: "broker.doomed" not in live)
        assert set(live) == {"broker.survivor"}
        assert best_is(directory, "survivor")
        await survivor.heartbeat.stop()


async def test_a_node_that_stops_cleanly_leaves_at_once(registry: Bucket, directory: NodeDirectory) -> None:
    node = Node(registry, "polite")
    async with asyncio.timeout(BOUND_S):
        await node.heartbeat.start()
        await directory.wait_for(lambda live: "broker.polite" in live)
        await node.heartbeat.stop()
        await directory.refresh()
    assert directory.nodes == {}
    assert directory.best_broker() is None


async def test_a_record_that_is_not_a_node_is_ignored(registry: Bucket, directory: NodeDirectory) -> None:
    await registry.kv.put("broker.garbage", b"not json")
    await registry.kv.put("broker.ok", NodeInfo("ok", "broker", connections=3).to_json())
    await directory.refresh()
    assert set(directory.nodes) == {"broker.ok"}
    with pytest.raises(ValueError, match="not a node record"):
        NodeInfo.from_json(b'{"kind": "broker"}')


def test_a_record_round_trips() -> None:
    info = NodeInfo(
        "n1", "broker", Endpoints("h", 1, "ws://h/mqtt"), connections=4, healthy=False, updated_at=5.0
    )
    assert NodeInfo.from_json(info.to_json()) == info


async def test_a_node_id_that_is_not_a_key_is_refused(registry: Bucket) -> None:
    with pytest.raises(ValueError, match="node_id"):
        NodeHeartbeat(registry, node_id="a.b", kind="broker", interval_s=BEAT_S)
