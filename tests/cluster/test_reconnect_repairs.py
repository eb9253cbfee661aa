"""What a process repairs after its NATS connection comes back: its membership cache, its sign-ins.

``forget_memberships_on_reconnect`` runs on a real reconnect here: a connection to the session's
NATS cluster through a relay (``tests.cluster.relay``) that the test cuts. ``SessionRecheck``'s
round is driven by hand, its connection state changed as ``ClusterConnection``'s callbacks change
it; the end-to-end runs with a real broker node are ``tests/cluster/test_cluster_gaps.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import pytest

from cluster.connection import ClusterConnection, NatsOptions
from cluster.inbox import forget_memberships_on_reconnect
from messaging import LoopClock
from messaging.membership import UNKNOWN, MembershipCache
from tests.cluster.relay import Relay
from tests.support.nats import NatsCluster

pytestmark = pytest.mark.timeout(60)  # a hang guard: every wait here waits on its event

_GROUP = 7


class _Directory:
    """A directory whose members the test changes (as the API would, behind the cache's back)."""

    def __init__(self) -> None:
        self.group = frozenset({1, 2})
        self.reads = 0

    async def members(self, conversation_id: int) -> frozenset[int] | None:
        self.reads += 1
        return self.group if conversation_id == _GROUP else None

    async def can_see_presence(self, viewer_id: int, subject_id: int) -> bool:
        return viewer_id == subject_id

    async def last_active(self, user_id: int) -> int | None:
        del user_id
        return None

    async def record_last_active(self, activity: Mapping[int, int]) -> None:
        del activity


@pytest.fixture
async def relayed(nats_cluster: NatsCluster) -> AsyncIterator[tuple[Relay, ClusterConnection]]:
    relay = Relay(("127.0.0.1", nats_cluster.servers[0].client_port))
    connection = await ClusterConnection.connect(
        NatsOptions(servers=(f"nats://127.0.0.1:{relay.port}",), name="test-repairs")
    )
    yield relay, connection
    await connection.close()
    relay.close()


async def test_every_cached_membership_is_forgotten_on_a_reconnect_and_after_it_settled(
    relayed: tuple[Relay, ClusterConnection],
) -> None:
    relay, connection = relayed
    directory, clock = _Directory(), LoopClock()
    cache = MembershipCache(directory, clock, ttl_s=30.0)
    forgets = 0
    settled = asyncio.Event()

    def forget_all() -> None:
        nonlocal forgets
        forgets += 1
        cache.forget_all()
        if forgets == 2:
            settled.set()

    forget_memberships_on_reconnect(connection.state, forget_all, settle_s=0.05)
    assert await cache.members(_GROUP) == frozenset({1, 2})
    directory.group = frozenset({1})  # member 2 removed; the change never reaches this process
    relay.cut()
    await asyncio.wait_for(connection.state.wait_for(lambda state: state.reconnects == 1), 30)
    assert forgets == 1  # within the reconnect's callback: nothing read since saw the stale cache
    assert cache.cached(_GROUP, clock.monotonic()) is UNKNOWN
    assert await cache.members(_GROUP) == frozenset({1})
    directory.group = frozenset()  # changed again while the other servers learn the subscription
    await asyncio.wait_for(settled.wait(), 30)
    assert await cache.members(_GROUP) == frozenset()
    assert directory.reads == 3
