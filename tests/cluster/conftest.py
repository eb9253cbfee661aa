"""Real NATS servers for the cluster tests: one JetStream cluster of three for the session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from cluster.connection import ClusterConnection, NatsOptions
from tests.support.nats import NatsCluster, start_nats


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
