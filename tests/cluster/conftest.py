"""Real NATS servers for the cluster tests: one JetStream cluster of three for the session.

For the end-to-end tests, one Hubbub cluster (brokers, persisters, notifier, API on
PostgreSQL) for the session too, on NATS servers of its own: its processes use the real
stream, consumer and bucket names, which the component tests here use on the shared servers.
``cluster`` repairs whatever the previous test killed or paused before handing it to the next;
after the last test that uses it, its processes stop (a later one would start them again).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cluster.connection import ClusterConnection, NatsOptions
from launcher.devcluster import HubbubProcess
from tests.cluster.relay import Relay, relayed_broker
from tests.support.cluster import ClusterClients, HubbubCluster, cluster_clients, start_hubbub_cluster
from tests.support.nats import NatsCluster, start_nats
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three routed nats-server processes with JetStream, shared by the session's tests."""
    cluster = start_nats(tmp_path_factory.mktemp("nats"), size=3)
    yield cluster
    cluster.stop()


@pytest.fixture
async def conn(nats_cluster: NatsCluster) -> AsyncIterator[ClusterConnection]:
    """A supervised connection to the session's cluster."""
    connection = await ClusterConnection.connect(NatsOptions(servers=tuple(nats_cluster.urls), name="test"))
    yield connection
    await connection.close()


@pytest.fixture
def unique() -> str:
    """A name no other test uses (tests share the cluster, so each uses its own buckets)."""
    return uuid.uuid4().hex[:12]


_CLUSTER_FIXTURE = "hubbub_cluster"
_running: list[HubbubCluster] = []


@pytest.fixture(scope="session")
def hubbub_cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[HubbubCluster]:
    """Two brokers, two persisters, a notifier and an API on three NATS servers and PostgreSQL."""
    nats = start_nats(tmp_path_factory.mktemp("cluster-nats"), size=3)
    try:
        running = start_hubbub_cluster(
            tmp_path_factory.mktemp("hubbub-cluster"), nats, postgres.create_database("cluster")
        )
        _running.append(running)
        yield running
        _stop(running)
        running.gateway.close()
    finally:
        nats.stop()


def _stop(running: HubbubCluster) -> None:
    """Stop the processes; each that was running must exit cleanly (0) on its SIGTERM."""
    alive = {name for name, process in running.processes.processes.items() if process.running()}
    codes = running.stop()
    failed = {name: code for name, code in codes.items() if name in alive and code != 0}
    assert not failed, f"stopped with {failed}\n{running.processes.logs()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of the Hubbub cluster one after another, from where the first one is.

    Its processes stop after the last of a run of its tests (below): a test of another file
    sorted between two of its files would cost a start of all six processes.
    """
    users = [item for item in items if _CLUSTER_FIXTURE in getattr(item, "fixturenames", ())]
    if not users:
        return
    first = items.index(users[0])
    others = [item for item in items if _CLUSTER_FIXTURE not in getattr(item, "fixturenames", ())]
    items[:] = others[:first] + users + others[first:]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last of a run of tests using the Hubbub cluster, stop its processes."""
    uses = _CLUSTER_FIXTURE in getattr(item, "fixturenames", ())
    next_uses = nextitem is not None and _CLUSTER_FIXTURE in getattr(nextitem, "fixturenames", ())
    if uses and not next_uses:
        for running in _running:
            _stop(running)


@pytest.fixture
def cluster(hubbub_cluster: HubbubCluster) -> HubbubCluster:
    """The session's Hubbub cluster, every process and NATS server running again."""
    hubbub_cluster.repair()
    return hubbub_cluster


@pytest.fixture
def users(cluster: HubbubCluster) -> Iterator[ClusterClients]:
    """New users' devices on the cluster (on a broker the test names, or the one login answers)."""
    with cluster_clients(cluster) as make:
        yield make


@pytest.fixture
def relay(cluster: HubbubCluster) -> Iterator[Relay]:
    """A relay to the session cluster's first NATS server, for a node whose link a test blacks out."""
    server = cluster.nats.servers[0]
    made = Relay(("127.0.0.1", server.client_port))
    yield made
    made.close()


@pytest.fixture
def relayed_node(cluster: HubbubCluster, relay: Relay, tmp_path: Path) -> Iterator[HubbubProcess]:
    """A third broker node of the session cluster whose NATS connection goes through ``relay``."""
    with relayed_broker(cluster, relay, tmp_path / "broker-relayed", "broker-relayed") as started:
        yield started
