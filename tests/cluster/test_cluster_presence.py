"""Presence across broker nodes, and when a node dies, under the grace rules.

A user with devices on two nodes is online until both are gone, then offline once (after the
grace period, ``GRACE_S`` in the cluster's settings). A node's ``kill -9`` takes its devices
offline through the registry and the same grace; a user with a device left on the other node
stays online. What "nothing changed meanwhile" means is shown by a marker: another user, whose
only device leaves just after the subject's device, goes offline after the same grace, and a
second marker leaving after that one's change spans another grace: the watcher sees no change
of the subject before both markers'.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from client import HubbubClient
from launcher.devcluster import HubbubProcess
from tests.support.cluster import GRACE_S, OUTCOME_S, ClusterClients, HubbubCluster, username_of
from tests.support.mqtt import Device

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def watchers() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        device.close()


def _befriend(a: HubbubClient, b: HubbubClient) -> None:
    a.request("POST", "/v1/friends/requests", json={"user_id": b.user_id}).raise_for_status()
    assert b.request("POST", f"/v1/friends/requests/{a.user_id}/accept").status_code == 200


def _watch(
    users: ClusterClients, watchers: list[Device], broker: HubbubProcess, *subjects: HubbubClient
) -> Device:
    """A friend of every subject, on ``broker``, subscribed to their presence (online at first)."""
    friend = users(broker=broker, connect=False)
    for subject in subjects:
        _befriend(subject, friend)
    host, port = broker.ready.mqtt
    device = Device(
        host=host,
        port=port,
        client_id=friend.device_id,
        username=friend.user_id,
        password=friend._tokens["access_token"],
    )
    watchers.append(device)
    assert device.connect() == 0
    for subject in subjects:
        assert device.subscribe(f"presence/{subject.user_id}") == [1]
    online = {_next_change(device)[0] for _ in subjects}
    assert online == {subject.user_id for subject in subjects}
    return device


def _next_change(watcher: Device) -> tuple[str, str]:
    """``(user_id, status)`` of the next presence message the watcher gets."""
    body = orjson.loads(watcher.next_message(timeout=GRACE_S + OUTCOME_S).payload)
    return body["user_id"], body["status"]


def test_a_user_on_two_nodes_is_online_until_both_devices_are_gone(
    cluster: HubbubCluster, users: ClusterClients, watchers: list[Device]
) -> None:
    one, two = cluster.brokers
    phone = users(broker=one)
    laptop = users(username_of(phone), broker=two)
    marker, later = users(broker=one), users(broker=two)
    watcher = _watch(users, watchers, two, phone, marker, later)
    phone.disconnect()
    marker.disconnect()
    assert _next_change(watcher) == (marker.user_id, "offline")
    later.disconnect()
    assert _next_change(watcher) == (
        later.user_id,
        "offline",
    )  # a whole grace on: the laptop keeps the user on
    laptop.disconnect()
    assert _next_change(watcher) == (phone.user_id, "offline")
    laptop.connect()
    assert _next_change(watcher) == (phone.user_id, "online")


def test_a_dead_node_takes_its_devices_offline_after_the_grace_period(
    cluster: HubbubCluster, users: ClusterClients, watchers: list[Device]
) -> None:
    one, doomed = cluster.brokers
    phone = users(broker=one)
    laptop = users(username_of(phone), broker=doomed, connect=False)  # the same user's, on the node that dies
    only_there = users(broker=doomed, connect=False)
    for device in (laptop, only_there):
        device.failover = False  # devices that do not come back elsewhere (their network died too)
        device.connect()
    later = users(broker=one)
    watcher = _watch(users, watchers, one, phone, only_there, later)
    doomed.kill()
    assert _next_change(watcher) == (only_there.user_id, "offline")
    later.disconnect()
    assert _next_change(watcher) == (
        later.user_id,
        "offline",
    )  # a whole grace on: the phone keeps the user on
    phone.disconnect()
    assert _next_change(watcher) == (phone.user_id, "offline")
