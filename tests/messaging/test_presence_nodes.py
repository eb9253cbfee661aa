"""Presence across nodes (messaging/presence.py) on a stepped clock: one writer, devices by (node, device)."""

from __future__ import annotations

import pytest

from hubbub.events import parse_presence
from hubbub.presence import PresenceDecider, PresenceService
from messaging.presence import LocalPresence, PresenceTracker
from tests.messaging.doubles import FakeConnections, FakeDirectory, ManualClock
from tests.messaging.test_presence import GRACE_S, Recorder

A, B = "node-a", "node-b"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def published() -> Recorder:
    return Recorder()


@pytest.fixture
def tracker(clock: ManualClock, published: Recorder) -> PresenceTracker:
    return PresenceTracker(grace_s=GRACE_S, publish=published, clock=clock)


def test_a_user_on_two_nodes_is_online_until_both_are_gone_then_after_the_grace_period(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone", A)
    tracker.device_connected(7, "laptop", B)
    clock.advance(60)
    tracker.device_disconnected(7, "phone", A)
    clock.advance(GRACE_S * 3)
    assert published.states == [True]
    tracker.device_disconnected(7, "laptop", B)
    clock.advance(GRACE_S - 0.001)
    assert published.states == [True]
    clock.advance(0.001)
    assert published.states == [True, False]


def test_the_same_device_id_on_two_nodes_is_two_connections(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone", A)
    tracker.device_connected(7, "phone", B)  # it moved to B before A noticed it left
    tracker.device_disconnected(7, "phone", A)
    clock.advance(GRACE_S * 3)
    assert tracker.online([7]) == {7}
    assert published.states == [True]


def test_a_dead_node_takes_its_devices_away_at_once_and_the_grace_period_follows(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone", A)
    tracker.device_connected(8, "phone", A)
    tracker.device_connected(8, "laptop", B)
    clock.advance(60)
    tracker.node_died(A)
    assert tracker.online([7, 8]) == {8}
    assert tracker.nodes() == {B}
    clock.advance(GRACE_S / 2)
    tracker.device_connected(7, "phone", B)  # reconnected elsewhere within the grace period
    clock.advance(GRACE_S * 3)
    assert published.published == [(7, True, published.published[0][2]), (8, True, published.published[1][2])]
    tracker.node_died(B)
    clock.advance(GRACE_S)
    assert sorted(published.published[2:]) == [(7, False, clock.wall_ms()), (8, False, clock.wall_ms())]


def test_a_resync_replaces_one_nodes_devices_as_connects_and_disconnects(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone", A)
    tracker.device_connected(8, "phone", A)
    tracker.device_connected(8, "laptop", B)
    clock.advance(60)
    tracker.resync(A, [(8, "phone"), (9, "tablet")])  # 7's phone left unseen, 9 came unseen
    assert tracker.online([7, 8, 9]) == {8, 9}
    tracker.resync(B, [])
    clock.advance(GRACE_S)
    assert [(user, online) for user, online, _ in published.published] == [
        (7, True),
        (8, True),
        (9, True),
        (7, False),
    ]


def test_a_new_writer_seeded_from_the_bucket_publishes_no_flap(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.seed(7, online=True, at_ms=clock.wall_ms() - 60_000)
    tracker.seed(8, online=False, at_ms=clock.wall_ms() - 60_000)
    tracker.resync(A, [(7, "phone")])
    clock.advance(GRACE_S * 3)
    assert published.published == []
    assert clock.pending == 0  # 8 was long offline: nothing kept


def test_a_seeded_online_user_nobody_holds_goes_offline_after_the_grace_period(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.seed(7, online=True, at_ms=clock.wall_ms() - 60_000)
    tracker.resync(A, [])
    clock.advance(GRACE_S - 0.001)
    assert published.published == []
    clock.advance(0.001)
    assert published.states == [False]


def test_a_change_just_before_the_takeover_still_bounds_the_next_one(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.seed(7, online=False, at_ms=clock.wall_ms() - 1_000)  # the old writer said offline 1 s ago
    tracker.device_connected(7, "phone", A)
    clock.advance(GRACE_S - 1 - 0.001)
    assert published.published == []
    clock.advance(0.001)
    assert published.states == [True]


def test_a_previous_writer_with_a_clock_ahead_counts_as_just_now(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.seed(7, online=False, at_ms=clock.wall_ms() + 3_600_000)
    tracker.device_connected(7, "phone", A)
    clock.advance(GRACE_S - 0.001)
    assert published.published == []
    clock.advance(0.001)
    assert published.states == [True]


def test_a_disconnect_of_a_device_unknown_on_that_node_changes_nothing(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone", A)
    tracker.device_disconnected(7, "phone", B)
    tracker.device_disconnected(8, "phone", A)
    clock.advance(GRACE_S * 2)
    assert tracker.online([7, 8]) == {7}
    assert published.states == [True]


async def test_one_node_publishes_to_its_retained_topic_and_records_the_last_activity(
    clock: ManualClock,
) -> None:
    connections, directory = FakeConnections(), FakeDirectory()
    local = LocalPresence(grace_s=GRACE_S, connections=connections, directory=directory, clock=clock)
    local.device_connected(7, "phone")
    assert parse_presence(await local.snapshot(7))["status"] == "online"
    connections.connected.add("phone")  # a newer connection of the same device took over
    local.device_disconnected(7, "phone")
    clock.advance(GRACE_S * 2)
    assert local.online([7]) == {7}
    assert [event["status"] for event in connections.presence[7]] == ["online"]
    await local.close()
    assert directory.last_seen == {7: clock.wall_ms() - round(GRACE_S * 2 * 1000)}
    assert parse_presence(await local.snapshot(8)) == {
        "user_id": "8",
        "status": "offline",
        "last_active_at": None,
    }


def _conforms(tracker: PresenceTracker, local: LocalPresence) -> None:
    """The implementations match their Protocols: mypy checks this assignment."""
    _: tuple[PresenceDecider, PresenceService] = (tracker, local)
