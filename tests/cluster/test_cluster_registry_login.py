"""Service discovery through the CLI: broker nodes register, login names the least loaded one.

Real processes (``hubbub broker`` x2 and ``hubbub api`` with ``HUBBUB_NATS_URL``), a real NATS
cluster of three of this module's own (so no other test's nodes are in its registry) and the
session's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cluster.connection import ClusterConnection, NatsOptions
from cluster.registry import NodeDirectory, NodeInfo, open_registry
from tests.support.api import ApiClient
from tests.support.cluster import eventually
from tests.support.mqtt import Device
from tests.support.nats import NatsCluster, start_nats
from tests.support.platform import REPO_ROOT, Platform, start_platform
from tests.support.postgres import PostgresServer

REGISTRY_TTL_S = 3.0
BOUND_S = 90.0  # the whole wait for an outcome on a loaded machine: generous, never a measurement


@dataclass
class Nodes:
    nats: NatsCluster
    brokers: dict[str, Platform]
    api: Platform
    env: dict[str, str]

    def stop(self) -> dict[str, int]:
        return {name: node.stop() for name, node in (*self.brokers.items(), ("api", self.api))}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("discovery")
    nats = start_nats(root / "nats", size=3)
    common = {
        "HUBBUB_NATS_URL": nats.url,
        "HUBBUB_DATABASE_URL": postgres.create_database(f"discovery_{uuid.uuid4().hex[:8]}"),
        "HUBBUB_SECRET_KEY": secrets.token_urlsafe(48),
        "HUBBUB_REGISTRY_TTL_S": str(REGISTRY_TTL_S),
        "HUBBUB_CONFIG_FILE": str(root / "absent.toml"),
    }
    started: dict[str, Platform] = {}
    try:
        for index, name in enumerate(("broker-a", "broker-b", "api")):
            env = common | {"HUBBUB_NODE_NAME": name, "HUBBUB_NODE_ID": str(index + 1)}
            command = "api" if name == "api" else "broker"
            started[name] = start_platform(root / name, command=command, extra_env=env)
        api = started.pop("api")
        yield Nodes(nats, started, api, common)
        codes = Nodes(nats, started, api, common).stop()
        assert set(codes.values()) == {0}, codes
    finally:
        for platform in started.values():
            platform.stop()
        nats.stop()


@pytest.fixture
async def directory(nodes: Nodes) -> AsyncIterator[NodeDirectory]:
    connection = await ClusterConnection.connect(NatsOptions(servers=tuple(nodes.nats.urls), name="test"))
    view = NodeDirectory(
        await open_registry(connection.js, ttl_s=REGISTRY_TTL_S, replicas=3), refresh_s=REGISTRY_TTL_S / 6
    )
    await view.start()
    yield view
    await view.stop()
    await connection.close()


def broker_named_at_login(api: ApiClient, nodes: Nodes, username: str) -> str:
    endpoint = api.login(username).mqtt
    names = [name for name, node in nodes.brokers.items() if node.mqtt_port == endpoint["port"]]
    assert len(names) == 1, (endpoint, {name: node.mqtt_port for name, node in nodes.brokers.items()})
    node = nodes.brokers[names[0]]
    assert endpoint["ws_url"] == node.http_url.replace("http://127.0.0.1", "ws://localhost") + "/mqtt"
    return names[0]


def connections(live: dict[str, NodeInfo], name: str) -> int | None:
    node = live.get(f"broker.{name}")
    return None if node is None else node.connections


async def test_login_names_the_least_loaded_healthy_broker(nodes: Nodes, directory: NodeDirectory) -> None:
    api = ApiClient(nodes.api.http_url)
    try:
        async with asyncio.timeout(BOUND_S):
            live = await directory.wait_for(
                lambda live: {"broker.broker-a", "broker.broker-b", "api.api"} <= set(live)
            )
        assert live["broker.broker-a"].endpoints.http_url == nodes.brokers["broker-a"].http_url
        assert live["api.api"].kind == "api"
        async with httpx.AsyncClient(timeout=10) as http:
            for node in (*nodes.brokers.values(), nodes.api):
                health = await http.get(f"{node.http_url}/healthz")
                assert (health.status_code, health.json()) == (200, {"status": "ok"}), node.process.log()
            metrics = (await http.get(f"{nodes.brokers['broker-a'].http_url}/metrics")).text
        assert 'hubbub_node_connections{kind="broker",node="broker-a"} 0.0' in metrics

        login = api.new_user("discovery")
        first = broker_named_at_login(api, nodes, login.username)  # both idle: ties go by name
        assert first == "broker-a"
        device = Device(
            host=nodes.brokers[first].mqtt_host,
            port=nodes.brokers[first].mqtt_port,
            client_id=login.device_id,
            username=login.user_id,
            password=login.access_token,
        )
        assert device.connect() == 0
        try:
            async with asyncio.timeout(BOUND_S):
                await directory.wait_for(lambda live: connections(live, "broker-a") == 1)
            # The API's own view of the registry refreshes on its own schedule.
            eventually(
                lambda: True if broker_named_at_login(api, nodes, login.username) == "broker-b" else None,
                "login names the broker with no connection",
            )
        finally:
            device.close()
        assert nodes.brokers["broker-b"].stop() == 0  # a graceful stop deregisters at once
        async with asyncio.timeout(BOUND_S):
            await directory.wait_for(lambda live: "broker.broker-b" not in live)
        eventually(
            lambda: True if broker_named_at_login(api, nodes, login.username) == "broker-a" else None,
            "login names the remaining broker",
        )
    finally:
        api.close()


def test_a_process_whose_snowflake_node_id_a_live_node_uses_refuses_to_start(
    nodes: Nodes, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUBBUB_")}
    env |= nodes.env | {
        "HUBBUB_NODE_NAME": "api-twin",
        "HUBBUB_NODE_ID": "3",  # the api node's
        "HUBBUB_DATA_DIR": str(tmp_path),
        "HUBBUB_HTTP_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "api"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND_S,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith(
        "hubbub: HUBBUB_NODE_ID 3 is used by api api, alive in the cluster: "
        "every process of a cluster needs its own (0..1023)\n"
    )
    assert "hubbub ready" not in done.stdout
