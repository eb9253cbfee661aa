"""A device whose broker node is killed moves to another node by itself, with the token it holds.

Login lists every live broker node; the access token is valid on each. So when its node dies
(``kill -9``) the client (``client.connection``) connects to the next listed node without a
refresh (its tokens stay what they were) and catches up; only when every listed node has failed
does it ask ``GET /v1/brokers``, which answers the live nodes from the registry.

The cluster is what ``make cluster`` starts (tests/support/cluster.py): the session's.
"""

from __future__ import annotations

import httpx
import pytest

from client import HubbubClient
from launcher.devcluster import HubbubProcess
from tests.support.api import ApiClient
from tests.support.chat import direct_conversation, expect_event
from tests.support.cluster import OUTCOME_S, ClusterClients, HubbubCluster, eventually

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def cluster(cluster: HubbubCluster) -> HubbubCluster:
    """The session's cluster (every process running again), with both brokers in the registry."""
    api = ApiClient(cluster.api_url)
    try:
        token = api.new_user("lister").access_token
    finally:
        api.close()
    ports = {_port(broker) for broker in cluster.brokers}
    eventually(lambda: _listed_ports(cluster, token) == ports or None, "both brokers listed")
    return cluster


def _port(broker: HubbubProcess) -> int:
    return broker.ready.mqtt[1]


def _brokers(cluster: HubbubCluster, token: str) -> httpx.Response:
    return httpx.get(
        f"{cluster.api_url}/v1/brokers", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _listed_ports(cluster: HubbubCluster, token: str) -> set[int]:
    return {int(endpoint["port"]) for endpoint in _brokers(cluster, token).json()["brokers"]}


def _on(device: HubbubClient, broker: HubbubProcess) -> bool | None:
    """The device is connected, and to ``broker`` (``None`` otherwise, for ``eventually``)."""
    route = device.route
    if route is None or not device.connected.is_set() or int(route.current["port"]) != _port(broker):
        return None
    return True


def test_a_device_whose_node_is_killed_moves_to_the_next_listed_node_without_a_refresh(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    doomed, survivor = cluster.brokers
    alice = users(broker=survivor)
    bob = users(broker=doomed)
    assert {int(endpoint["port"]) for endpoint in bob._tokens["brokers"]} == {_port(doomed), _port(survivor)}
    tokens = dict(bob._tokens)
    conversation_id = direct_conversation(alice, bob)
    assert bob.settled()
    doomed.kill()
    alice.send(conversation_id, "while you moved")
    expect_event(alice, "ack")
    eventually(lambda: _on(bob, survivor), "bob connected to the surviving node")
    alice.send(conversation_id, "after the move")
    expect_event(bob, "message", lambda event: event["text"] == "after the move")
    assert bob.settled(OUTCOME_S)  # the catch-up, and the fill of any gap the move left
    texts = [message["text"] for message in bob.timelines[conversation_id].ordered()]
    assert texts == ["while you moved", "after the move"]
    assert bob._tokens == tokens  # no refresh, no login: the same access token on another node


def test_a_device_whose_listed_nodes_all_failed_asks_which_are_live(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    doomed, survivor = cluster.brokers
    carol = users(broker=doomed, connect=False)
    only_doomed = dict(carol._tokens["mqtt"])
    carol._tokens["brokers"] = [only_doomed]  # as if the survivor had joined after its login
    tokens = dict(carol._tokens)
    carol.connect()
    doomed.kill()
    eventually(lambda: _on(carol, survivor), "carol connected to the node the registry named")
    assert carol.route is not None
    assert _port(survivor) in {int(endpoint["port"]) for endpoint in carol.route.endpoints}
    assert carol._tokens == tokens


def test_brokers_answers_only_live_nodes_and_only_with_a_valid_token(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    doomed, survivor = cluster.brokers
    dave = users(broker=survivor)
    token = dave._tokens["access_token"]
    listed = _brokers(cluster, token)
    assert listed.status_code == 200, listed.text
    assert {int(endpoint["port"]) for endpoint in listed.json()["brokers"]} == {
        _port(doomed),
        _port(survivor),
    }
    assert listed.json()["max_age_s"] > 0
    doomed.kill()

    def only_the_survivor() -> list[int] | None:
        ports = [int(endpoint["port"]) for endpoint in _brokers(cluster, token).json()["brokers"]]
        return ports if ports == [_port(survivor)] else None

    eventually(only_the_survivor, "the killed node left the list")
    assert _brokers(cluster, "not-a-token").status_code == 401
    assert httpx.get(f"{cluster.api_url}/v1/brokers", timeout=10).status_code == 401
