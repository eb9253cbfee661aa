"""A cluster's processes share one VAPID key through NATS, whatever their data directories hold."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster.connection import ClusterConnection, NatsOptions
from config import load_settings
from launcher.push import shared_vapid_key
from notifier.providers.vapid import VapidKey
from tests.support.nats import start_nats

BOUND_S = 60.0
POSTGRES = "postgresql+asyncpg://hubbub@127.0.0.1:1/hubbub"  # a cluster's settings; never opened here


async def test_the_first_process_offers_its_key_and_every_other_one_uses_it(tmp_path: Path) -> None:
    nats = start_nats(tmp_path / "nats", size=1)
    try:
        async with asyncio.timeout(BOUND_S):
            connection = await ClusterConnection.connect(NatsOptions(servers=tuple(nats.urls), name="vapid"))
            try:
                first_dir, second_dir = tmp_path / "api", tmp_path / "notifier"
                existing = VapidKey.load_or_create(first_dir / "vapid.pem")  # a node that grew into a cluster
                keys = [
                    await shared_vapid_key(
                        connection.js,
                        load_settings(
                            data_dir=data_dir, nats_url=nats.url, database_url=POSTGRES, nats_replicas=1
                        ),
                    )
                    for data_dir in (first_dir, second_dir)
                ]
                assert {key.public_key for key in keys} == {existing.public_key}
                assert not (second_dir / "vapid.pem").exists()  # it took the cluster's, made none
            finally:
                await connection.close()
    finally:
        nats.stop()
