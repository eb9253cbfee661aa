"""A Hubbub cluster under test: what ``make cluster`` starts, driven by the chat scenarios.

Why ``launcher.devcluster`` and ``launcher.local_servers`` and no start-up code of its own: the
benchmark must measure the processes operators run, started the way ``make cluster`` starts
them (three NATS servers with JetStream replicated x3, PostgreSQL, ``hubbub broker|persister|
notifier|api`` from the CLI). PostgreSQL keeps its durable defaults here (``bench.postgres``),
unlike the throw-away ``make cluster``.

Users are written straight into the account database and their tokens signed with the cluster's
secret (``bench.hubbub_up`` says why); conversations are made over the API's REST. CPU is read
from ``/proc`` per process (``tree_cpu_seconds``: PostgreSQL's postmaster with its backends), so
a run can say what each kind of process spent per delivered message.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import text

from api.store.accounts import digest
from bench.chat import _SETTINGS
from bench.hubbub import TOKEN_TTL_S, insert_devices
from bench.hubbub_up import USER_ID_BASE, BenchUser, tree_cpu_seconds
from bench.postgres import BENCH_SETTINGS
from hubbub.shards import ShardMap
from launcher.devcluster import ClusterPlan, DevCluster, HubbubProcess
from launcher.local_servers import NatsCluster, PostgresServer, start_nats, start_postgres
from persister.sql_database import create_engine

__all__ = ["PLAN", "ClusterTarget", "DeviceLogin", "start_cluster"]

# Two API processes: REST is stateless over PostgreSQL, so a deployment runs several behind a
# balancer, and a failover's syncs are spread over them (the failover's workers, one API each).
PLAN = ClusterPlan(brokers=2, persisters=2, notifiers=1, apis=2)
_CLUSTER_SETTINGS = {
    **{f"HUBBUB_{name.upper()}": value for name, value in _SETTINGS.items()},
    "HUBBUB_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE": "1000000",
    "HUBBUB_MAX_GROUP_MEMBERS": "100",
    "HUBBUB_LOG_LEVEL": "WARNING",
}
_INSERT_REFRESH = (
    "INSERT INTO refresh_tokens (token_hash, device_id, user_id, expires_at)"
    " VALUES (:token_hash, :device_id, :user_id, :expires_at)"
)


def _say(text_: str) -> None:
    sys.stderr.write(text_ + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class DeviceLogin:
    """A device as a client app holds it after a login: tokens, and the broker it was told."""

    user_id: int
    device_id: str
    access_token: str
    refresh_token: str


class ClusterTarget:
    """The running servers and processes; ``mqtt_host``/``mqtt_port`` name broker-1 (the one node)."""

    def __init__(
        self, root: Path, nats: NatsCluster, postgres: PostgresServer, processes: DevCluster
    ) -> None:
        self.root = root
        self.nats = nats
        self.postgres = postgres
        self.processes = processes
        self.shards = ShardMap(PLAN.conversation_shards, PLAN.presence_shards)
        self.secret = processes.api.env["HUBBUB_SECRET_KEY"]
        self.mqtt_host, self.mqtt_port = self.brokers[0].ready.mqtt
        self.http_url = processes.api.ready.http_url
        self.http_urls = [api.ready.http_url for api in processes.role("api")]  # every API process
        self._next_user = USER_ID_BASE + int(time.time()) % 1000 * 10_000
        self.readings: list[dict[str, float]] = []  # every cpu_seconds() call's per-process figures

    @property
    def brokers(self) -> list[HubbubProcess]:
        """Broker nodes in name order."""
        return self.processes.role("broker")

    def endpoints(self, nodes: int) -> list[tuple[str, int]]:
        """MQTT host and port of the first ``nodes`` broker nodes."""
        return [broker.ready.mqtt for broker in self.brokers[:nodes]]

    def pids(self) -> dict[str, int]:
        """Every process under test by name: Hubbub's, each NATS server, PostgreSQL's postmaster."""
        pids = {name: p.pid for name, p in self.processes.processes.items() if p.running()}
        pids |= {f"nats-{s.name}": s.process.pid for s in self.nats.servers if s.process is not None}
        pids["postgresql"] = self.postgres.pid
        return pids

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds used so far by each process (its children included)."""
        readings = {name: tree_cpu_seconds(pid) for name, pid in self.pids().items()}
        return {name: value for name, value in readings.items() if value is not None}

    def cpu_seconds(self) -> float | None:
        """The sum over every process (``ChatTarget``), its per-process figures kept in ``readings``.

        The chat scenario calls it at the start and the end of its measured window, so the last
        two readings are that window's, process by process.
        """
        self.readings.append(self.cpu_by_process())
        return sum(self.readings[-1].values())

    def _codec(self) -> object:
        from hubbub.tokens import TokenCodec  # noqa: PLC0415 - as bench.hubbub_up imports it

        return TokenCodec(self.secret, access_ttl_s=TOKEN_TTL_S)

    def make_users(self, count: int) -> list[BenchUser]:
        """``count`` users with a signed-in device each, in PostgreSQL, with access tokens."""
        from hubbub.tokens import TokenCodec  # noqa: PLC0415

        codec = self._codec()
        assert isinstance(codec, TokenCodec)  # noqa: S101 - narrowing for mypy
        first, self._next_user = self._next_user, self._next_user + count
        users = [(first + k, f"bd{first + k}") for k in range(count)]
        insert_devices(self.postgres.url, users)
        return [BenchUser(uid, device, codec.issue_access(uid, device)) for uid, device in users]

    def make_logins(self, count: int) -> list[DeviceLogin]:
        """Users as after a login: an access token and a live refresh token each (for failover)."""
        users = self.make_users(count)
        logins = [DeviceLogin(u.user_id, u.device_id, u.token, secrets.token_urlsafe(32)) for u in users]
        asyncio.run(self._insert_refresh(logins))
        return logins

    async def _insert_refresh(self, logins: list[DeviceLogin]) -> None:
        expires_at = int(time.time() * 1000) + TOKEN_TTL_S * 1000
        rows = [
            {
                "token_hash": digest(login.refresh_token),
                "device_id": login.device_id,
                "user_id": login.user_id,
                "expires_at": expires_at,
            }
            for login in logins
        ]
        engine = create_engine(self.postgres.url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(_INSERT_REFRESH), rows)
        finally:
            await engine.dispose()

    def create_conversation(self, http: httpx.Client, creator: BenchUser, body: dict[str, object]) -> int:
        """``POST /v1/conversations`` on the API process as ``creator``; the conversation id."""
        response = http.post(
            "/v1/conversations", json=body, headers={"Authorization": f"Bearer {creator.token}"}
        )
        response.raise_for_status()
        return int(response.json()["id"])

    def stop(self) -> None:
        """Every Hubbub process, then NATS and PostgreSQL; the temp dir removed."""
        with contextlib.suppress(Exception):
            self.processes.stop()
        self.nats.stop()
        self.postgres.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(settings: Mapping[str, str] | None = None) -> ClusterTarget:
    """NATS x3, PostgreSQL (durable defaults) and the ``PLAN`` processes, each ready; the target."""
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    began = time.monotonic()
    with contextlib.ExitStack() as undo:
        undo.callback(shutil.rmtree, root, ignore_errors=True)
        nats = start_nats(root / "nats", size=3)
        undo.callback(nats.stop)
        postgres = start_postgres(BENCH_SETTINGS)
        undo.callback(postgres.stop)
        processes = DevCluster(
            root,
            nats_url=nats.url,
            database_url=postgres.url,
            plan=PLAN,
            env={**_CLUSTER_SETTINGS, **(settings or {})},
        )
        processes.start()
        undo.pop_all()
    took = time.monotonic() - began
    _say(f"[cluster] NATS x3, PostgreSQL and {len(PLAN.names())} processes ready in {took:.0f} s")
    return ClusterTarget(root, nats, postgres, processes)
