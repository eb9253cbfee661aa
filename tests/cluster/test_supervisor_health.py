"""A cluster process's /healthz follows its NATS connection: 503 with the reason while it is down.

A real ``hubbub persister`` on a NATS server of its own (one server, replicas 1), which the test
stops and starts again.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.cluster import eventually
from tests.support.nats import start_nats
from tests.support.platform import start_platform
from tests.support.postgres import PostgresServer

BOUND_S = 90.0


def health_until(url: str, accept: Callable[[int], bool]) -> tuple[int, dict[str, Any]]:
    """Poll ``/healthz`` of another process until ``accept(status)`` (it announces no change)."""

    def answer() -> tuple[int, dict[str, Any]] | None:
        response = httpx.get(f"{url}/healthz", timeout=10)
        return (response.status_code, response.json()) if accept(response.status_code) else None

    return eventually(answer, "/healthz to answer as expected", BOUND_S)


def test_healthz_is_503_while_nats_is_down_and_200_once_it_is_back(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    nats = start_nats(tmp_path / "nats", size=1)
    persister = None
    try:
        persister = start_platform(
            tmp_path / "persister",
            command="persister",
            extra_env={
                "HUBBUB_NATS_URL": nats.url,
                "HUBBUB_NATS_REPLICAS": "1",
                "HUBBUB_DATABASE_URL": postgres.create_database(f"health_{uuid.uuid4().hex[:8]}"),
                "HUBBUB_SECRET_KEY": secrets.token_urlsafe(48),
                "HUBBUB_NODE_NAME": "persister-health",
                "HUBBUB_CONFIG_FILE": str(tmp_path / "absent.toml"),
            },
        )
        url = persister.http_url
        assert health_until(url, lambda _: True) == (200, {"status": "ok"}), persister.process.log()
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'hubbub_nats_connected{kind="persister",node="persister-health"} 1.0' in metrics

        nats.servers[0].stop()
        _, body = health_until(url, lambda code: code == 503)
        assert body["status"] == "unhealthy"
        assert body["problems"][0].startswith("NATS connection down"), body

        nats.servers[0].start()
        nats.wait_ready()
        assert health_until(url, lambda code: code == 200) == (200, {"status": "ok"})
        assert persister.stop() == 0, persister.process.log()
    finally:
        if persister is not None:
            persister.stop()
        nats.stop()
