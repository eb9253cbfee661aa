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

from cluster.connection import ClusterConnection, ConnectionState, NatsOptions
from cluster.inbox import forget_memberships_on_reconnect
from cluster.session_recheck import SessionRecheck
from hubbub.sessions import DeviceEnded
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


class _Store:
    """The account store's answers: every device signed in but ``ended``."""

    def __init__(self, ended: set[str]) -> None:
        self.ended = ended
        self.asked: list[str] = []

    def is_signed_in(self, user_id: int, device_id: str) -> asyncio.Future[bool]:
        del user_id
        self.asked.append(device_id)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        answer.set_result(device_id not in self.ended)
        return answer


class _Live:
    """The node's connections: records what was ended, and says when ``expected`` were."""

    def __init__(self, expected: int) -> None:
        self.ended: list[str] = []
        self._expected = expected
        self.done = asyncio.Event()

    async def end_device(self, ended: DeviceEnded) -> None:
        self.ended.append(ended.device_id)
        if len(self.ended) == self._expected:
            self.done.set()


async def _no_pause(_seconds: float) -> None:
    return None


async def test_a_reconnect_forgets_the_sign_ins_and_ends_the_devices_the_store_no_longer_holds() -> None:
    state = ConnectionState(connected=True)
    devices = [(1, "a"), (2, "b"), (3, "c"), (3, "d")]
    store = _Store(ended={"b", "d"})
    live = _Live(expected=2)
    forgets = 0

    def forget_all() -> None:
        nonlocal forgets
        forgets += 1

    recheck = SessionRecheck(
        state, lambda: devices, store, forget_all, live, rate=40.0, tick_s=0.05, pause=_no_pause
    )
    recheck.start()
    try:
        state.reconnected()
        assert forgets == 1  # at once: a CONNECT from now on asks the store
        await state.changed()
        await asyncio.wait_for(live.done.wait(), 30)
        assert live.ended == ["b", "d"]
        assert sorted(store.asked) == ["a", "b", "c", "d"]
        assert forgets == 2
        assert recheck.rounds == 1
    finally:
        await recheck.stop()
