"""The project's own broker under test: ``hubbub broker`` in a subprocess with JWT logins.

Why mint tokens here instead of logging in over REST: the broker verifies the JWT (username =
user id, client id = the token's device) and asks the account store whether the device is
still signed in, so 10,000 subscribers need 10,000 signatures with the data dir's secret and
10,000 rows in the store (``insert_devices``: SQLite, or PostgreSQL for ``bench.postgres``), not
10,000 password hashes. Subscribers subscribe to
their own ``user/{uid}/inbox``; the publisher is a service account (``service:bench``), the
only kind of client allowed to publish there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text

from bench.brokers import LOOPBACK, BrokerStartError, Credentials, SubprocessBroker
from hubbub import topics
from persister.sql_database import create_engine

__all__ = ["REPO_ROOT", "HubbubBroker", "hubbub_broker", "hubbub_env", "insert_devices"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE = "bench"
TOKEN_TTL_S = 86_400  # longer than any run: a token expiring mid-run would look like a broker fault
MAX_CLIENTS = 50_000  # signed-in devices made for the broker scenarios, whatever their size


_INSERT_USER = (
    "INSERT INTO users (id, username, display_name, password_hash, created_at)"
    " VALUES (:id, :username, :display_name, '!', :now)"
)
_INSERT_DEVICE = (
    "INSERT INTO devices (id, user_id, name, created_at, last_login_at)"
    " VALUES (:id, :user_id, 'bench', :now, :now)"
)


def insert_devices(database: Path | str, devices: Sequence[tuple[int, str]]) -> None:
    """A user and a signed-in device per ``(user id, device id)``, written straight into the account store.

    ``database``: the platform's SQLite file (the standard library's driver: 50,000 rows in a
    blink), or the SQLAlchemy URL of its PostgreSQL database.
    """
    now = int(time.time() * 1000)
    users = [
        {"id": user_id, "username": f"bench{user_id}", "display_name": f"bench {user_id}", "now": now}
        for user_id, _ in devices
    ]
    device_rows = [{"id": device_id, "user_id": user_id, "now": now} for user_id, device_id in devices]
    if isinstance(database, str):
        asyncio.run(_insert_by_url(database, users, device_rows))
        return
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db, db:
        db.executemany(_INSERT_USER, users)
        db.executemany(_INSERT_DEVICE, device_rows)


async def _insert_by_url(url: str, users: list[dict[str, object]], devices: list[dict[str, object]]) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(_INSERT_USER), users)
            await connection.execute(text(_INSERT_DEVICE), devices)
    finally:
        await engine.dispose()


def hubbub_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """Our environment minus any ``HUBBUB_*`` of the caller's, plus ``settings`` (upper-cased names)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUBBUB_")}
    env |= {
        "HUBBUB_DATA_DIR": str(data_dir),
        "HUBBUB_BIND": LOOPBACK,
        "HUBBUB_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env |= {f"HUBBUB_{name.upper()}": value for name, value in settings.items()}
    return env


class HubbubBroker(SubprocessBroker):
    """``python -m launcher.cli broker`` on a free port, its SQLite and secret in a temp dir."""

    name = "hubbub"
    ready_timeout = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._secret: str | None = None

    def command(self, workdir: Path, port: int) -> list[str]:
        """The broker alone (ingest and persister included), run from the repository root."""
        del workdir, port
        return [sys.executable, "-m", "launcher.cli", "broker"]

    def environment(self, workdir: Path, port: int) -> dict[str, str]:
        """Settings by environment, as in production."""
        return hubbub_env(workdir / "data", mqtt_port=str(port), broker_ws_port="0")

    def working_dir(self, workdir: Path) -> Path:
        """The repository root, so ``launcher`` imports from this checkout."""
        del workdir
        return REPO_ROOT

    def ready(self, workdir: Path) -> None:
        """Read the signing secret the broker generated; sign in the devices ``credentials_for`` names."""
        path = workdir / "data" / "secret.key"
        if not path.exists():
            raise BrokerStartError(f"hubbub wrote no secret at {path}")
        self._secret = path.read_text().strip()
        insert_devices(workdir / "data" / "hubbub.db", [(k + 1, f"bench-{k}") for k in range(MAX_CLIENTS)])

    def _codec(self) -> object:
        from hubbub.tokens import TokenCodec  # noqa: PLC0415 - the project's code, imported on demand

        if self._secret is None:
            raise BrokerStartError("credentials asked before the broker started")
        return TokenCodec(self._secret, access_ttl_s=TOKEN_TTL_S)

    def credentials_for(self, client_index: int) -> Credentials:
        """User ``index + 1`` on device ``bench-{index}`` with a fresh access token."""
        from hubbub.tokens import TokenCodec  # noqa: PLC0415

        codec = self._codec()
        assert isinstance(codec, TokenCodec)  # noqa: S101 - narrowing for mypy
        user_id, device_id = client_index + 1, f"bench-{client_index}"
        return Credentials(device_id, username=str(user_id), password=codec.issue_access(user_id, device_id))

    def topic_for(self, client_index: int) -> str:
        """The user's own inbox: the only topic a device may subscribe to."""
        return topics.inbox(client_index + 1)

    def publisher_credentials(self, publisher_index: int) -> Credentials:
        """A service account: services may publish to any inbox."""
        from hubbub.tokens import TokenCodec  # noqa: PLC0415

        codec = self._codec()
        assert isinstance(codec, TokenCodec)  # noqa: S101
        return Credentials(
            f"bench-pub-{publisher_index}",
            username=f"service:{SERVICE}",
            password=codec.issue_service(SERVICE, ttl_s=TOKEN_TTL_S),
        )

    def version(self) -> str:
        """The project's broker on the pinned amqtt."""
        import importlib.metadata  # noqa: PLC0415

        return f"hubbub (its own MQTT server; amqtt {importlib.metadata.version('amqtt')} decodes CONNECT)"


def hubbub_broker() -> HubbubBroker:
    """Factory for ``--plugin bench.hubbub:hubbub_broker``."""
    return HubbubBroker()
