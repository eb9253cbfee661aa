"""Presence decisions (messaging/presence.py) on a stepped clock: no waiting, no wall time."""

from __future__ import annotations

import pytest

from messaging.presence import PresenceTracker
from tests.messaging.doubles import ManualClock

GRACE_S = 5.0


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[int, bool, int]] = []

    def __call__(self, user_id: int, online: bool, at_ms: int) -> None:
        self.published.append((user_id, online, at_ms))

    @property
    def states(self) -> list[bool]:
        return [online for _, online, _ in self.published]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def published() -> Recorder:
    return Recorder()


@pytest.fixture
def tracker(clock: ManualClock, published: Recorder) -> PresenceTracker:
    return PresenceTracker(grace_s=GRACE_S, publish=published, clock=clock)


def test_the_first_connect_publishes_online_at_once_with_the_wall_time(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone")
    assert published.published == [(7, True, clock.wall_ms())]
    assert tracker.online([7, 8]) == {7}


def test_offline_comes_after_the_grace_period_not_before(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone")
    clock.advance(60)
    tracker.device_disconnected(7, "phone")
    assert tracker.online([7]) == set()  # the view is immediate; the publish waits
    clock.advance(GRACE_S - 0.001)
    assert published.states == [True]
    clock.advance(0.001)
    assert published.states == [True, False]
    assert published.published[-1][2] == clock.wall_ms()


def test_a_user_is_online_while_any_device_is(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone")
    tracker.device_connected(7, "laptop")
    tracker.device_disconnected(7, "phone")
    clock.advance(GRACE_S * 3)
    assert published.states == [True]
    assert tracker.online([7]) == {7}
    tracker.device_disconnected(7, "laptop")
    clock.advance(GRACE_S)
    assert published.states == [True, False]


def test_a_reconnect_within_the_grace_period_publishes_nothing(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone")
    clock.advance(60)
    tracker.device_disconnected(7, "phone")
    clock.advance(GRACE_S / 2)
    tracker.device_connected(7, "phone")  # the train left the tunnel
    clock.advance(GRACE_S * 4)
    assert published.states == [True]
    assert clock.pending == 0


def test_each_user_is_published_at_most_once_per_grace_period(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone")
    clock.advance(60)
    tracker.device_disconnected(7, "phone")
    clock.advance(GRACE_S)  # offline published at t0
    tracker.device_connected(7, "phone")  # back at once: online may only follow a grace period later
    clock.advance(GRACE_S - 0.001)
    assert published.states == [True, False]
    clock.advance(0.001)
    assert published.states == [True, False, True]
    times = [at for _, _, at in published.published]
    assert times[2] - times[1] == GRACE_S * 1000


def test_a_storm_of_reconnects_costs_one_publish_per_user_that_changed(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    for user_id in range(100):
        tracker.device_connected(user_id, f"d{user_id}")
    clock.advance(60)
    for _ in range(10):  # a network blip, ten times over
        for user_id in range(100):
            tracker.device_disconnected(user_id, f"d{user_id}")
        clock.advance(0.1)
        for user_id in range(100):
            tracker.device_connected(user_id, f"d{user_id}")
    clock.advance(GRACE_S * 2)
    assert len(published.published) == 100  # only the first online of each


def test_an_offline_user_is_forgotten_a_grace_period_after_its_last_publish(
    tracker: PresenceTracker, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone")
    tracker.device_disconnected(7, "phone")
    clock.advance(GRACE_S)  # offline published
    assert tracker._users
    clock.advance(GRACE_S)
    assert not tracker._users
    assert clock.pending == 0


def test_close_cancels_pending_decisions(
    tracker: PresenceTracker, published: Recorder, clock: ManualClock
) -> None:
    tracker.device_connected(7, "phone")
    tracker.device_disconnected(7, "phone")
    tracker.close()
    clock.advance(GRACE_S * 2)
    assert published.states == [True]
