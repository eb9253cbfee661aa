"""Service discovery through the CLI: broker nodes register, login names the least loaded one.

On the session's Hubbub cluster (``hubbub broker`` x2, ``hubbub api`` and the rest, each with
``HUBBUB_NATS_URL``): once the devices of earlier tests are gone, both brokers are idle, so
login names the first by name, then the other once the first has a connection, then the one
left after a graceful stop (which deregisters at once). A process whose Snowflake node id a
live node uses refuses to start.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cluster.connection import ClusterConnection, NatsOptions
from cluster.registry import NodeDirectory, NodeInfo, open_registry
from launcher.devcluster import HubbubProcess
from tests.support.api import ApiClient
from tests.support.cluster import OUTCOME_S, REGISTRY_TTL_S, HubbubCluster, eventually
from tests.support.mqtt import Device

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def directory(cluster: HubbubCluster) -> AsyncIterator[NodeDirectory]:
    connection = await ClusterConnection.connect(NatsOptions(servers=tuple(cluster.nats.urls), name="test"))
    view = NodeDirectory(
        await open_registry(connection.js, ttl_s=REGISTRY_TTL_S, replicas=3), refresh_s=REGISTRY_TTL_S / 6
    )
    await view.start()
    yield view
    await view.stop()
    await connection.close()


def broker_named_at_login(api: ApiClient, cluster: HubbubCluster, username: str) -> HubbubProcess:
    endpoint = api.login(username).mqtt
    named = [broker for broker in cluster.brokers if broker.ready.mqtt[1] == endpoint["port"]]
    assert len(named) == 1, (endpoint, {broker.name: broker.ready.mqtt for broker in cluster.brokers})
    assert urlsplit(endpoint["ws_url"]).port == urlsplit(named[0].ready.ws_url).port
    return named[0]


def connections(live: dict[str, NodeInfo], broker: HubbubProcess) -> int | None:
    node = live.get(f"broker.{broker.name}")
    return None if node is None else node.connections


def test_a_process_whose_snowflake_node_id_a_live_node_uses_refuses_to_start(
    cluster: HubbubCluster, tmp_path: Path
) -> None:
    api = cluster.processes.api
    env = {key: value for key, value in api.env.items() if key.startswith("HUBBUB_")}
    env |= {key: value for key, value in os.environ.items() if not key.startswith("HUBBUB_")}
    env |= {"HUBBUB_NODE_NAME": "api-twin", "HUBBUB_DATA_DIR": str(tmp_path)}  # the api's node id
    done = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "api"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=OUTCOME_S,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith(
        f"hubbub: HUBBUB_NODE_ID {env['HUBBUB_NODE_ID']} is used by api {api.name}, alive in the cluster: "
        "every process of a cluster needs its own (0..1023)\n"
    )
    assert "hubbub ready" not in done.stdout


# Last of the cluster's tests: it stops a broker, which nothing has to start again then.
async def test_login_names_the_least_loaded_healthy_broker(
    cluster: HubbubCluster, directory: NodeDirectory
) -> None:
    first, second = cluster.brokers
    api = ApiClient(cluster.api_url)
    try:
        async with asyncio.timeout(OUTCOME_S):  # earlier tests' devices are gone: both idle
            live = await directory.wait_for(
                lambda live: (
                    connections(live, first) == connections(live, second) == 0
                    and f"api.{cluster.processes.api.name}" in live
                )
            )
        assert live[f"broker.{first.name}"].endpoints.http_url == first.ready.http_url
        assert live[f"api.{cluster.processes.api.name}"].kind == "api"
        async with httpx.AsyncClient(timeout=10) as http:
            for node in (first, second, cluster.processes.api):
                health = await http.get(f"{node.ready.http_url}/healthz")
                assert (health.status_code, health.json()) == (200, {"status": "ok"}), node.log_tail()
            metrics = (await http.get(f"{first.ready.http_url}/metrics")).text
        assert f'hubbub_node_connections{{kind="broker",node="{first.name}"}} 0.0' in metrics

        login = api.new_user("discovery")
        # The API's own view of the registry refreshes on its own schedule: both idle there too.
        eventually(
            lambda: True if broker_named_at_login(api, cluster, login.username) is first else None,
            "login names the first broker by name while both are idle",
        )
        host, port = first.ready.mqtt
        device = Device(
            host=host,
            port=port,
            client_id=login.device_id,
            username=login.user_id,
            password=login.access_token,
        )
        assert device.connect() == 0
        try:
            async with asyncio.timeout(OUTCOME_S):
                await directory.wait_for(lambda live: connections(live, first) == 1)
            eventually(
                lambda: True if broker_named_at_login(api, cluster, login.username) is second else None,
                "login names the broker with no connection",
            )
        finally:
            device.close()
        assert second.stop() == 0, second.log_tail()  # a graceful stop deregisters at once
        async with asyncio.timeout(OUTCOME_S):
            await directory.wait_for(lambda live: f"broker.{second.name}" not in live)
        eventually(
            lambda: True if broker_named_at_login(api, cluster, login.username) is first else None,
            "login names the remaining broker",
        )
    finally:
        api.close()
