"""One contract for presence reporting and reading, over both implementations.

``local``: one node, ``messaging.presence.LocalPresence`` (``hubbub up``). ``nats``: two simulated
broker nodes on the session's real NATS cluster, ``cluster.presence_node.NodePresence`` on each
and the shard writers on the first. Either way a node's core reports its devices
(``PresenceReports``) and reads (``PresenceReader``); a topic it took a snapshot of receives
every later change through ``DeviceConnections.set_presence``. Waits are on those changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import pytest

from hubbub.presence import PresenceReports, PresenceService
from messaging.clock import LoopClock
from messaging.presence import LocalPresence
from tests.cluster.test_presence_cluster import (
    BOUND_S,
    GRACE_S,
    StartNode,
    WatchedConnections,
    all_shards_written,
    buckets,
    nodes,
    registered,
)
from tests.messaging.doubles import FakeDirectory

__all__ = ["buckets", "nodes"]  # fixtures this suite uses from the cluster tests


@dataclass
class System:
    """Two reporting nodes (the same one, in-process) and the reading side of the first."""

    reporters: tuple[PresenceReports, PresenceReports]
    reader: PresenceService
    connections: WatchedConnections

    async def watch(self, *user_ids: int) -> None:
        """Devices of the first node subscribe to these users' presence (nothing retained yet)."""
        for user_id in user_ids:
            assert orjson.loads(await self.reader.snapshot(user_id))["status"] == "offline"

    async def until(self, user_id: int, statuses: Iterable[str]) -> None:
        expected = list(statuses)
        while self.connections.statuses(user_id) != expected:
            assert len(self.connections.statuses(user_id)) < len(expected), self.connections.statuses(user_id)
            self.connections.changed.clear()
            await self.connections.changed.wait()

    async def barrier(self, user_id: int) -> None:
        """Once this returns, any decision due from earlier reports has been taken."""
        await self.watch(user_id)
        self.reporters[0].device_connected(user_id, "barrier")
        await self.until(user_id, ["online"])
        self.reporters[0].device_disconnected(user_id, "barrier")
        await self.until(user_id, ["online", "offline"])


@pytest.fixture(params=["local", "nats"])
async def system(request: pytest.FixtureRequest, nodes: StartNode) -> System:
    if request.param == "local":
        connections = WatchedConnections()
        local = LocalPresence(
            grace_s=GRACE_S, connections=connections, directory=FakeDirectory(), clock=LoopClock()
        )
        return System((local, local), local, connections)
    a = await nodes("a")
    b = await nodes("b", writer=False)
    await registered(a, "a", "b")
    await all_shards_written(a)
    return System((a.presence, b.presence), a.presence, a.connections)


async def test_a_watched_user_goes_online_then_offline_after_the_grace_period(system: System) -> None:
    async with asyncio.timeout(BOUND_S):
        await system.watch(7)
        system.reporters[0].device_connected(7, "phone")
        await system.until(7, ["online"])
        assert system.reader.online([7, 8]) == {7}
        assert orjson.loads(await system.reader.snapshot(7))["status"] == "online"
        system.reporters[0].device_disconnected(7, "phone")
        await system.until(7, ["online", "offline"])
    assert system.reader.online([7]) == set()
    assert orjson.loads(await system.reader.snapshot(7))["status"] == "offline"


async def test_a_user_with_devices_on_two_nodes_is_online_until_both_leave(system: System) -> None:
    async with asyncio.timeout(BOUND_S):
        await system.watch(7)
        system.reporters[0].device_connected(7, "phone")
        system.reporters[1].device_connected(7, "laptop")
        await system.until(7, ["online"])
        system.reporters[0].device_disconnected(7, "phone")
        await system.barrier(8)
        assert system.connections.statuses(7) == ["online"]
        assert system.reader.online([7]) == {7}
        system.reporters[1].device_disconnected(7, "laptop")
        await system.until(7, ["online", "offline"])


async def test_a_reconnect_within_the_grace_period_changes_nothing(system: System) -> None:
    async with asyncio.timeout(BOUND_S):
        await system.watch(7)
        system.reporters[0].device_connected(7, "phone")
        await system.until(7, ["online"])
        system.reporters[0].device_disconnected(7, "phone")
        system.reporters[0].device_connected(7, "phone")
        await system.barrier(8)
    assert system.connections.statuses(7) == ["online"]


async def test_a_user_never_seen_reads_as_offline_with_no_last_activity(system: System) -> None:
    assert system.reader.online([99]) == set()
    assert orjson.loads(await system.reader.snapshot(99)) == {
        "user_id": "99",
        "status": "offline",
        "last_active_at": None,
    }
