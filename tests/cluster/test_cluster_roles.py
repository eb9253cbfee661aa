"""Each cluster process composed from the CLI: a message crosses broker nodes, REST sends and presence.

Real processes (``hubbub broker`` x2, ``hubbub persister`` x2, ``hubbub notifier``, ``hubbub api``
with ``HUBBUB_NATS_URL``): the session's Hubbub cluster (``tests/cluster/conftest.py``), on its
three NATS servers and the session's PostgreSQL. The failure tests (kill -9 of each kind) are
the other ``test_cluster_*`` modules; these check that every role is wired: ingest -> accepted
stream -> persister -> fan-out over the users' inboxes -> the other node's devices, the REST
submitter waiting for its commit reply, the presence writers and mirror, /metrics per node.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from launcher.devcluster import HubbubProcess
from tests.support.chat import direct_conversation, expect_event
from tests.support.cluster import ClusterClients, HubbubCluster, eventually

pytestmark = pytest.mark.timeout(300)

_OWNED = re.compile(r'^hubbub_lease_owned_shards\{group="persister"\} (\d+)\.0$', re.MULTILINE)


def health(process: HubbubProcess) -> tuple[int, Any]:
    response = httpx.get(f"{process.ready.http_url}/healthz", timeout=10)
    return response.status_code, response.json()


def test_every_process_is_healthy_and_shows_its_metrics(cluster: HubbubCluster) -> None:
    for name, process in cluster.processes.processes.items():
        assert health(process) == (200, {"status": "ok"}), (name, process.log())

    shards = cluster.shards.conversation_shards

    def every_shard_owned() -> bool | None:
        owned = [
            int(count)
            for persister in cluster.persisters
            for count in _OWNED.findall(cluster.metrics(persister))
        ]
        return True if sum(owned) == shards else None

    eventually(every_shard_owned, f"the persisters own all {shards} conversation shards between them")
    for persister in cluster.persisters:
        assert 'hubbub_loop_healthy{loop="persister"} 1.0' in cluster.metrics(persister)
    notifier = cluster.metrics(cluster.notifier)
    assert "hubbub_push_" in notifier or "hubbub_loop_healthy" in notifier


def test_a_message_crosses_broker_nodes_and_a_rest_send_reaches_the_other_node(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    one, two = cluster.brokers
    alice = users(broker=one)
    bob = users(broker=two)
    conversation = direct_conversation(alice, bob)
    alice.send(conversation, "over NATS")
    message = expect_event(bob, "message", lambda event: event["conversation_id"] == conversation)
    assert message["text"] == "over NATS"
    assert message["seq"] == 1
    assert alice.settled(), cluster.logs()

    sent = bob.request(
        "POST", f"/v1/conversations/{conversation}/messages", json={"cmid": "rest-1", "text": "by REST"}
    )
    assert sent.status_code == 201, (sent.text, cluster.logs())
    assert sent.json()["seq"] == 2
    relayed = expect_event(alice, "message", lambda event: event.get("text") == "by REST")
    assert relayed["seq"] == 2

    def alice_online() -> bool | None:
        answer = bob.request("GET", "/v1/presence", params={"user_ids": alice.user_id}).json()["presence"]
        return True if answer and answer[0]["status"] == "online" else None

    eventually(alice_online, "the API's presence mirror shows alice online")


def test_an_offline_member_gets_a_push_from_the_notifier(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    alice = users()
    bob = users(connect=False)  # never online: every message to him is pushed
    registered = bob.request(
        "PUT", f"/v1/devices/{bob.device_id}/push", json={"provider": "apns", "token": "bob-phone"}
    )
    assert registered.status_code in {200, 204}, registered.text
    conversation = direct_conversation(alice, bob)
    alice.send(conversation, "are you there?")
    push = cluster.gateway.next_push(bob.device_id)
    assert push["notification"]["body"] == "are you there?", cluster.logs()
