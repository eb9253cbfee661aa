"""Real NATS servers for the cluster tests: one JetStream cluster of three for the session.

On it, for the end-to-end tests, one Hubbub cluster (brokers, persisters, notifier, API on
PostgreSQL) for the session too: ``cluster`` repairs whatever the previous test killed or
paused before handing it to the next.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from cluster.connection import ClusterConnection, NatsOptions
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


@pytest.fixture(scope="session")
def hubbub_cluster(
    tmp_path_factory: pytest.TempPathFactory, nats_cluster: NatsCluster, postgres: PostgresServer
) -> Iterator[HubbubCluster]:
    """Two brokers, two persisters, a notifier and an API on the session's NATS and PostgreSQL."""
    running = start_hubbub_cluster(
        tmp_path_factory.mktemp("hubbub-cluster"), nats_cluster, postgres.create_database("cluster")
    )
    yield running
    codes = running.stop()
    running.gateway.close()
    assert set(codes.values()) <= {0}, f"{codes}\n{running.processes.logs()}"


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
