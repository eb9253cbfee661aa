"""The NATS fixture itself: a 3-peer JetStream cluster, its failure report, and failover."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.connection import ClusterConnection, NatsOptions
from cluster.kv import ensure_bucket
from tests.support.nats import NatsCluster, NatsServer, start_nats, when_jetstream_answers


async def test_the_cluster_has_three_jetstream_peers(
    conn: ClusterConnection, nats_cluster: NatsCluster
) -> None:
    assert len(nats_cluster.servers) == 3
    info = await conn.js.account_info()
    assert info.limits is not None
    reports = [server.jsz() for server in nats_cluster.servers]
    assert all(report is not None for report in reports)
    leaders = {report["meta_cluster"]["leader"] for report in reports if report is not None}  # type: ignore[index]
    assert len(leaders) == 1


async def test_a_replicated_bucket_survives_the_kill_of_one_server(tmp_path: Path) -> None:
    cluster = start_nats(tmp_path, size=3)
    connection = await ClusterConnection.connect(NatsOptions(servers=tuple(cluster.urls), name="failover"))
    try:
        bucket = await ensure_bucket(connection.js, "survivor", ttl_s=None, replicas=3)
        revision = await bucket.kv.put("k", b"before")
        connected = connection.client.connected_url
        assert connected is not None
        victim = next(server for server in cluster.servers if server.url == connected.geturl())
        victim.kill()
        async with asyncio.timeout(60):
            await connection.state.wait_for(lambda state: state.reconnects >= 1 and state.connected)
            later = await when_jetstream_answers(lambda: bucket.kv.put("k", b"after"))
        assert later > revision
        assert (await bucket.kv.get("k")).value == b"after"
        assert connection.state.disconnects >= 1
    finally:
        await connection.close()
        cluster.stop()


def test_a_single_server_variant_starts(tmp_path: Path) -> None:
    cluster = start_nats(tmp_path, size=1)
    try:
        report = cluster.servers[0].jsz()
        assert report is not None
        assert not report.get("disabled")
    finally:
        cluster.stop()


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    server = NatsServer("broken", tmp_path / "broken", client_port=1, cluster_port=2, monitor_port=3)
    server.root.mkdir()
    server.config_path.write_text("jetstream {{{ not a config\n")
    server.start()
    with pytest.raises(AssertionError, match="broken exited") as failure:
        NatsCluster(tmp_path, [server]).wait_ready(timeout=30)
    assert "--- broken" in str(failure.value)
