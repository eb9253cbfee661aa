"""``InboxResync``'s rounds: one per reconnect, paced, ended by a disconnect, fair to a cut round's tail.

The connection's state is driven by hand as ``ClusterConnection``'s callbacks drive it, and the
round's pauses (the settle time, then one per slice) are released by the test one at a time, so
what each slice told is exact. The real NATS reconnect, end to end, is
``tests/cluster/test_cluster_resync.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from cluster.connection import ConnectionState
from cluster.inbox_resync import InboxResync
from hubbub.events import parse_inbox_event, resync_event

pytestmark = pytest.mark.timeout(60)  # a hang guard: every wait here is released by the test

SETTLE_S = 0.5
TICK_S = 0.05
PER_TICK = 2


class _Held:
    """The node's users (``NodeInbox`` in a node), changed by the test."""

    def __init__(self, users: Iterable[int]) -> None:
        self.users = list(users)

    def holds(self, user_id: int) -> bool:
        return user_id in self.users

    def held_users(self) -> list[int]:
        return list(self.users)


class _Devices:
    """The node's MQTT server: the users told, in order, as they are told."""

    def __init__(self) -> None:
        self.told: asyncio.Queue[int] = asyncio.Queue()

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        assert only_device is None
        assert skip_device is None
        assert parse_inbox_event(payload) == {"kind": "resync"}
        self.told.put_nowait(user_id)
        return 1

    async def next(self, count: int) -> list[int]:
        return [await self.told.get() for _ in range(count)]


class _Pauses:
    """The round's waits, each held until the test releases it."""

    def __init__(self) -> None:
        self._waiting: asyncio.Queue[tuple[float, asyncio.Future[None]]] = asyncio.Queue()

    async def pause(self, seconds: float) -> None:
        done = asyncio.get_running_loop().create_future()
        self._waiting.put_nowait((seconds, done))
        await done

    async def release(self) -> float:
        """Let the next wait end; how long it was asked to be."""
        seconds, done = await self._waiting.get()
        done.set_result(None)
        return seconds


async def _drop(state: ConnectionState) -> None:
    state.connected = False
    state.disconnects += 1
    await state.changed()


async def _back(state: ConnectionState) -> None:
    state.connected = True
    state.reconnects += 1
    await state.changed()


@pytest.fixture
def state() -> ConnectionState:
    return ConnectionState(connected=True)


@pytest.fixture
def held() -> _Held:
    return _Held(range(1, 6))


@pytest.fixture
def devices() -> _Devices:
    return _Devices()


@pytest.fixture
def pauses() -> _Pauses:
    return _Pauses()


@pytest.fixture
async def resync(
    state: ConnectionState, held: _Held, devices: _Devices, pauses: _Pauses
) -> AsyncIterator[InboxResync]:
    following = InboxResync(
        state,
        held,
        devices,
        rate=PER_TICK / TICK_S,
        settle_s=SETTLE_S,
        tick_s=TICK_S,
        pause=pauses.pause,
    )
    following.start()
    yield following
    assert following.running
    await following.stop()
    assert not following.running


async def test_a_reconnect_tells_every_user_held_once_in_paced_slices_after_the_settle_time(
    state: ConnectionState, devices: _Devices, pauses: _Pauses, resync: InboxResync
) -> None:
    await _drop(state)
    await _back(state)
    assert await pauses.release() == SETTLE_S
    assert await devices.next(PER_TICK) == [1, 2]
    assert await pauses.release() == TICK_S
    assert await devices.next(PER_TICK) == [3, 4]
    assert await pauses.release() == TICK_S
    assert await devices.next(1) == [5]
    assert (resync.rounds, resync.told, resync.owed) == (1, 5, 0)
    assert devices.told.empty()


async def test_a_disconnect_ends_the_round_and_the_next_one_tells_the_cut_tail_first(
    state: ConnectionState, held: _Held, devices: _Devices, pauses: _Pauses, resync: InboxResync
) -> None:
    await _drop(state)
    await _back(state)
    await pauses.release()
    assert await devices.next(PER_TICK) == [1, 2]
    await _drop(state)  # during the round's pause after its first slice
    held.users = [1, 3, 4, 5, 6]  # 2 left, 6 came during the gap
    assert await pauses.release() == TICK_S  # the cut round wakes, finds the link dropped, tells nobody
    await _back(state)
    assert await pauses.release() == SETTLE_S
    assert await devices.next(PER_TICK) == [3, 4]  # the ones the cut round had not reached
    await pauses.release()
    assert await devices.next(PER_TICK) == [5, 1]
    await pauses.release()
    assert await devices.next(1) == [6]
    assert (resync.rounds, resync.told, resync.owed) == (2, 7, 0)


async def test_a_link_that_flaps_costs_each_user_one_resync_per_round_not_one_per_flap(
    state: ConnectionState, devices: _Devices, pauses: _Pauses, resync: InboxResync
) -> None:
    await _drop(state)
    await _back(state)
    await pauses.release()
    assert await devices.next(PER_TICK) == [1, 2]
    for _ in range(10):  # during the round's pause after its first slice
        await _drop(state)
        await _back(state)
    assert await pauses.release() == TICK_S  # the cut round ends
    assert await pauses.release() == SETTLE_S  # one new round for the ten reconnects
    assert await devices.next(PER_TICK) == [3, 4]
    await pauses.release()
    assert await devices.next(PER_TICK) == [5, 1]
    await pauses.release()
    assert await devices.next(1) == [2]
    assert (resync.rounds, resync.told, resync.owed) == (2, 7, 0)


async def test_users_who_left_before_their_turn_are_skipped(
    state: ConnectionState, held: _Held, devices: _Devices, pauses: _Pauses, resync: InboxResync
) -> None:
    await _drop(state)
    await _back(state)
    await pauses.release()  # the round's users were taken at its start: 1 to 5
    held.users = [2, 5]
    assert await devices.next(1) == [2]
    await pauses.release()
    await pauses.release()
    assert await devices.next(1) == [5]
    assert (resync.told, resync.owed) == (2, 0)


def test_a_rate_that_tells_nobody_is_refused(state: ConnectionState, devices: _Devices) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        InboxResync(state, _Held(()), devices, rate=0)


def test_the_event_is_the_contract_s_resync() -> None:
    assert parse_inbox_event(resync_event()) == {"kind": "resync"}
