"""``kill -9`` of a broker node in the middle of a burst: its devices move, nothing is lost or doubled.

The sender and one recipient sit on the node that dies, another recipient on the node that
lives. The sender's devices move by themselves to the next node their login listed, with the
token they hold (``client.connection``), and resend what was not acknowledged with the same
cmids; afterwards history has every cmid once with a dense seq, and every device's timeline is
complete after its catch-up.
"""

from __future__ import annotations

import pytest

from client import HubbubClient
from launcher.devcluster import HubbubProcess
from tests.support.chat import expect_event
from tests.support.cluster import (
    OUTCOME_S,
    ClusterClients,
    HubbubCluster,
    assert_once_and_dense,
    eventually,
)

pytestmark = pytest.mark.timeout(300)

BURST = 150


def _moved_to_a_live_node(cluster: HubbubCluster, device: HubbubClient, dead: HubbubProcess) -> None:
    """What an app does when its node is gone: the next node its login listed, the same token."""

    def on_a_live_node() -> bool | None:
        route = device.route
        if route is None or not device.connected.is_set():
            return None
        node = cluster.broker_of_port(int(route.current["port"]))
        return True if node is not None and node is not dead else None

    eventually(on_a_live_node, "the device connected to a live broker node")


def test_a_broker_killed_mid_burst_loses_and_doubles_nothing(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    doomed, survivor = cluster.brokers
    alice = users(broker=doomed)
    carol = users(broker=doomed, transport="websockets")
    bob = users(broker=survivor)
    created = alice.request(
        "POST",
        "/v1/conversations",
        json={"type": "group", "title": "doomed", "member_ids": [bob.user_id, carol.user_id]},
    )
    assert created.status_code == 201, created.text
    conversation_id: str = created.json()["id"]
    for device in (alice, bob, carol):
        assert device.settled()
    cmids = {alice.send(conversation_id, f"burst {index}").cmid for index in range(BURST)}
    for _ in range(BURST // 3):  # a third stored and acknowledged: the rest is in flight
        expect_event(alice, "ack")
    doomed.kill()
    for device in (alice, carol):
        _moved_to_a_live_node(cluster, device, doomed)
    assert alice.outbox.emptied.wait(OUTCOME_S), f"{len(alice.outbox)} of {BURST} never acknowledged"
    rows = assert_once_and_dense(bob, conversation_id, cmids)
    assert len(rows) == BURST
    for device in (alice, bob, carol):
        assert device.settled(OUTCOME_S)
        timeline = device.timelines[conversation_id]
        assert timeline.held == BURST, f"{device.device_id} holds up to {timeline.held}"
        assert {message["cmid"] for message in timeline.ordered()} == cmids
