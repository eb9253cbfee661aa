"""A broker node's link to NATS blacks out under it: its devices still get what the gap lost.

The node under test is a third broker started here whose NATS connection goes through a TCP
relay (``tests.cluster.relay``) the test controls: a blackout drops every byte both ways while both sockets
stay open, as a network blip does, so the server goes on sending the node its users' events into
the void. The relay answers the node's PINGs meanwhile, so the node notices nothing however long
the test's work in the gap takes on a loaded machine (unanswered, two PINGs would end it: 10-15 s).
During the blackout a message to a user of that node is committed and published on
``hubbub.inbox.<uid>``, lost, and a user a device there watches goes offline. Then the relay
cuts the connection; nats-py reconnects at once, and the node tells its devices ``resync``
(``cluster/inbox_resync.py``): the real client library answers with its catch-up and holds the
message, its device having stayed connected all along; and the node's retained presence follows
the presence bucket, so the watcher sees the change the gap had hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson
import pytest

from client import HubbubClient
from launcher.devcluster import HubbubProcess
from tests.cluster.relay import Relay
from tests.support.chat import direct_conversation, no_event_before
from tests.support.cluster import GRACE_S, OUTCOME_S, ClusterClients, HubbubCluster, username_of
from tests.support.mqtt import Device

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        device.close()


def _device(client: HubbubClient, broker: HubbubProcess, devices: list[Device]) -> Device:
    host, port = broker.ready.mqtt
    device = Device(
        host=host,
        port=port,
        client_id=client.device_id,
        username=client.user_id,
        password=client._tokens["access_token"],
    )
    devices.append(device)
    assert device.connect() == 0
    return device


def _presence_of(watcher: Device, user: HubbubClient) -> str:
    """The status of the next presence message ``watcher`` gets, which must be ``user``'s."""
    body = orjson.loads(watcher.next_message(timeout=GRACE_S + OUTCOME_S).payload)
    assert body["user_id"] == user.user_id
    status: str = body["status"]
    return status


def test_a_device_whose_node_lost_nats_gets_what_the_gap_lost_through_a_resync(
    cluster: HubbubCluster,
    users: ClusterClients,
    relay: Relay,
    relayed_node: HubbubProcess,
    devices: list[Device],
) -> None:
    other = cluster.brokers[1]
    alice = users(broker=other)
    bob = users(broker=relayed_node)
    carol = users(broker=other)
    conversation_id = direct_conversation(alice, bob)
    assert bob.settled(OUTCOME_S)
    watcher = users(broker=relayed_node, connect=False)
    watcher.request("POST", "/v1/friends/requests", json={"user_id": carol.user_id}).raise_for_status()
    carol.request("POST", f"/v1/friends/requests/{watcher.user_id}/accept").raise_for_status()
    here = _device(watcher, relayed_node, devices)  # the watcher's device on the node that loses NATS
    there = _device(users(username_of(watcher), broker=other, connect=False), other, devices)
    for device in (here, there):
        assert device.subscribe(f"presence/{carol.user_id}") == [1]
        assert _presence_of(device, carol) == "online"

    relay.black_out()
    alice.send(conversation_id, "sent in the gap")
    assert alice.outbox.emptied.wait(OUTCOME_S), "the message sent in the gap was never acknowledged"
    # Committed, so published: into the blackout, which the node has not noticed yet.
    assert relay.dark_connections(), "the node left the blackout by itself before the message"
    carol.disconnect()
    assert _presence_of(there, carol) == "offline"  # decided and published during the gap
    relay.cut()

    before = no_event_before(bob, lambda event: event["kind"] == "resync")
    assert not [event for event in before if event["kind"] == "message"], "delivered live, not lost"
    assert bob.settled(OUTCOME_S)
    held = bob.timelines[conversation_id].ordered()
    assert [message["text"] for message in held] == ["sent in the gap"]
    assert bob.connected.is_set()
    metrics = cluster.metrics(relayed_node)
    assert re.search(
        rf'^hubbub_inbox_resync_rounds_total\{{node="{relayed_node.name}"\}} [1-9]', metrics, re.MULTILINE
    )
    assert re.search(
        rf'^hubbub_inbox_resync_told_total\{{node="{relayed_node.name}"\}} [1-9]', metrics, re.MULTILINE
    )
    assert _presence_of(here, carol) == "offline"
