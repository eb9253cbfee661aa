"""Each cluster process composed from the CLI: a message crosses broker nodes, REST sends and presence.

Real processes (``hubbub broker`` x2, ``hubbub persister``, ``hubbub notifier``, ``hubbub api``
with ``HUBBUB_NATS_URL``), a real NATS cluster of three of this module's own and the session's
PostgreSQL. The failure tests (kill -9 of each kind) are the cluster harness's
(``tests/cluster``); these check that every role is wired: ingest -> accepted stream ->
persister -> fan-out over the users' inboxes -> the other node's devices, the REST submitter
waiting for its commit reply, the presence writers and mirror, /metrics per node.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from client import HubbubClient
from tests.support.chat import ClientFactory, client_factory, direct_conversation, expect_event
from tests.support.cluster import eventually
from tests.support.nats import NatsCluster, start_nats
from tests.support.platform import Platform, start_platform
from tests.support.postgres import PostgresServer
from tests.support.webhook import PushGateway

BOUND_S = 90.0


@dataclass
class Cluster:
    nats: NatsCluster
    nodes: dict[str, Platform]
    gateway: PushGateway

    def broker_of(self, client: HubbubClient) -> str:
        port = int(client._tokens["mqtt"]["port"])
        return next(
            name for name, node in self.nodes.items() if name.startswith("broker") and node.mqtt_port == port
        )

    def logs(self) -> str:
        return "\n".join(f"--- {name}:\n{node.process.log()[-4000:]}" for name, node in self.nodes.items())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("roles")
    nats = start_nats(root / "nats", size=3)
    gateway = PushGateway()
    common = {
        "HUBBUB_PUSH_WEBHOOK_URL": gateway.url,
        "HUBBUB_PUSH_COALESCE_WINDOW_S": "0",
        "HUBBUB_NATS_URL": nats.url,
        "HUBBUB_DATABASE_URL": postgres.create_database(f"roles_{uuid.uuid4().hex[:8]}"),
        "HUBBUB_SECRET_KEY": secrets.token_urlsafe(48),
        "HUBBUB_CONVERSATION_SHARDS": "8",
        "HUBBUB_PRESENCE_SHARDS": "4",
        "HUBBUB_LEASE_TTL_S": "5",
        "HUBBUB_REGISTRY_TTL_S": "3",
        "HUBBUB_CONFIG_FILE": str(root / "absent.toml"),
    }
    nodes: dict[str, Platform] = {}
    try:
        for index, name in enumerate(("broker-a", "broker-b", "persister", "notifier", "api")):
            env = common | {"HUBBUB_NODE_NAME": name, "HUBBUB_NODE_ID": str(index + 1)}
            nodes[name] = start_platform(
                root / name, command=name.removesuffix("-a").removesuffix("-b"), extra_env=env
            )
        yield Cluster(nats, nodes, gateway)
        codes = {name: node.stop() for name, node in nodes.items()}
        assert set(codes.values()) == {0}, (codes, Cluster(nats, nodes, gateway).logs())
    finally:
        for node in nodes.values():
            node.stop()
        nats.stop()
        gateway.close()


@pytest.fixture
def clients(cluster: Cluster) -> Iterator[ClientFactory]:
    with client_factory(cluster.nodes["api"].http_url) as make:
        yield make


def health(node: Platform) -> tuple[int, Any]:
    response = httpx.get(f"{node.http_url}/healthz", timeout=10)
    return response.status_code, response.json()


def test_every_process_is_healthy_and_shows_its_metrics(cluster: Cluster) -> None:
    for name, node in cluster.nodes.items():
        assert health(node) == (200, {"status": "ok"}), (name, node.process.log())
    persister = httpx.get(f"{cluster.nodes['persister'].http_url}/metrics", timeout=10).text
    assert 'hubbub_lease_owned_shards{group="persister"} 8.0' in persister
    assert 'hubbub_loop_healthy{loop="persister"} 1.0' in persister
    notifier = httpx.get(f"{cluster.nodes['notifier'].http_url}/metrics", timeout=10).text
    assert "hubbub_push_" in notifier or "hubbub_loop_healthy" in notifier


def test_a_message_crosses_broker_nodes_and_a_rest_send_reaches_the_other_node(
    cluster: Cluster, clients: ClientFactory
) -> None:
    alice = clients()
    bob = clients(connect=False)
    other = "broker-b" if cluster.broker_of(alice) == "broker-a" else "broker-a"
    node = cluster.nodes[other]
    bob._tokens["mqtt"] = {"host": node.mqtt_host, "port": node.mqtt_port, "ws_url": node.ws_url}
    bob.connect()
    assert cluster.broker_of(bob) != cluster.broker_of(alice)
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


def test_an_offline_member_gets_a_push_from_the_notifier(cluster: Cluster, clients: ClientFactory) -> None:
    alice = clients()
    bob = clients(connect=False)  # never online: every message to him is pushed
    registered = bob.request(
        "PUT", f"/v1/devices/{bob.device_id}/push", json={"provider": "apns", "token": "bob-phone"}
    )
    assert registered.status_code in {200, 204}, registered.text
    conversation = direct_conversation(alice, bob)
    alice.send(conversation, "are you there?")
    push = cluster.gateway.next_push(bob.device_id)
    assert push["notification"]["body"] == "are you there?", cluster.logs()
