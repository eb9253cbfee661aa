"""The whole cluster for end-to-end tests: what ``make cluster`` starts, with handles to hurt it.

Three NATS servers (the session's ``nats_cluster``), PostgreSQL (the session's ``postgres``, a
database of the cluster's own), two broker nodes, two persisters, a notifier and an API, each a
real ``hubbub <role>`` process started from the CLI by ``launcher.devcluster`` on free ports in
temp dirs. Tests kill (``kill -9``), pause (``SIGSTOP``), resume and restart processes and NATS
servers; ``repair`` brings everything back before the next test, so one cluster serves all of
them. The settings every process shares are short where a test waits them out (presence grace,
lease and registry TTLs) and loose where a test would trip on them (send rate, login rate).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import nats
from nats.js.errors import BucketNotFoundError

from client import HubbubClient
from cluster.kv import Bucket
from cluster.leases import LeaseRecord, bucket_name
from hubbub.shards import ShardMap
from launcher.devcluster import ClusterPlan, DevCluster, HubbubProcess
from tests.support.chat import all_history, client_factory
from tests.support.nats import NatsCluster
from tests.support.platform import CHEAP_PASSWORD_HASH
from tests.support.webhook import PushGateway

__all__ = [
    "GRACE_S",
    "LEASE_TAKEOVER_BOUND_S",
    "LEASE_TTL_S",
    "OUTCOME_S",
    "REGISTRY_TTL_S",
    "ClusterClients",
    "HubbubCluster",
    "assert_once_and_dense",
    "eventually",
    "start_hubbub_cluster",
]

T = TypeVar("T")

# Every wait a test sits out is one of these: as short as a loaded machine tolerates (a registry
# heartbeat every third of its TTL). The lease stays at 5 s and the shards at 16 + 4: with 4 + 2
# shards the paused-persister test waited in vain for the successor's fence (with a 2 s and a 5 s
# lease alike); a 2 s lease with 16 + 4 shards is untried.
GRACE_S = 1.0
LEASE_TTL_S = 5.0
# cluster/leases.py, "Bound on a takeover after an owner dies": (1 + renew_fraction) x TTL after
# the dead owner's last renewal (renew_fraction 1/3), plus one round trip.
LEASE_TAKEOVER_BOUND_S = (1 + 1 / 3) * LEASE_TTL_S
REGISTRY_TTL_S = 2.0
# A dead notifier's unacked batch comes again after this (the default is 30 s).
PUSH_ACK_WAIT_S = 2.0
OUTCOME_S = 90.0  # a generous deadline for outcomes on a loaded two-core machine
_POLL_S = 0.1
PLAN = ClusterPlan(brokers=2, persisters=2, notifiers=1, apis=1, conversation_shards=16, presence_shards=4)


def _settings(gateway: PushGateway) -> dict[str, str]:
    return {
        "HUBBUB_PRESENCE_GRACE_S": str(GRACE_S),
        "HUBBUB_LEASE_TTL_S": str(LEASE_TTL_S),
        "HUBBUB_REGISTRY_TTL_S": str(REGISTRY_TTL_S),
        "HUBBUB_PUSH_ACK_WAIT_S": str(PUSH_ACK_WAIT_S),
        "HUBBUB_CONNECT_TIMEOUT_S": "2",
        "HUBBUB_SENDS_PER_SECOND": "10000",
        "HUBBUB_SEND_BURST": "10000",
        "HUBBUB_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE": "1000000",
        "HUBBUB_PUSH_WEBHOOK_URL": gateway.url,
        "HUBBUB_PUSH_COALESCE_WINDOW_S": "0",  # one push per message: pushes can be counted
    } | CHEAP_PASSWORD_HASH


def eventually(check: Callable[[], T | None], what: str, timeout: float = OUTCOME_S) -> T:
    """The first non-None result of ``check``, polled until ``timeout``; fails naming ``what``.

    For states that announce no event a test can block on (REST history, a lease in the KV
    bucket, a metric): the poll is the wait, with a short pause so it does not spin.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(_POLL_S)  # between polls of another process's state, not a synchronisation


@dataclass
class HubbubCluster:
    """The running cluster: its NATS servers, its processes, the push stand-in."""

    nats: NatsCluster
    processes: DevCluster
    gateway: PushGateway
    shards: ShardMap

    @property
    def brokers(self) -> list[HubbubProcess]:
        """Broker nodes in name order (``broker-1``, ``broker-2``)."""
        return self.processes.role("broker")

    @property
    def persisters(self) -> list[HubbubProcess]:
        """Persisters in name order."""
        return self.processes.role("persister")

    @property
    def notifier(self) -> HubbubProcess:
        """The notifier."""
        return self.processes.role("notifier")[0]

    @property
    def api_url(self) -> str:
        """Base URL of the REST API."""
        return self.processes.api.ready.http_url

    def logs(self) -> str:
        """Every process's log tail and every NATS server's, for a failure message."""
        return f"{self.processes.logs()}\n{self.nats.logs()}"

    def repair(self) -> None:
        """Every NATS server and every process running and not paused (a test may have hurt them)."""
        stopped_servers = [server for server in self.nats.servers if server.process is None]
        for server in stopped_servers:
            server.start()
        if stopped_servers:
            self.nats.wait_ready()
        exited = [process for process in self.processes.processes.values() if not process.running()]
        for process in self.processes.processes.values():
            if process in exited:
                process.start()  # side by side: after the cluster was stopped, all six start at once
            else:
                process.resume()
        for process in exited:
            process.wait_ready()
        self.wait_leases_balanced()

    def wait_leases_balanced(self) -> None:
        """Every lease group's shards held by its running members, as evenly as the balancer spreads them.

        After a restart shards move for a few lease ticks (the newcomer takes the surplus the others
        hand back, a killed member's records run out): a test that picks a shard's owner from the
        bucket before that ends may pick one about to let it go. The processes' own view
        (``/metrics``) is what counts here: a record in the bucket may still name a member that
        was killed and restarted under the same name, whose new process never held it.
        """
        groups = (
            ("persister", self.persisters, self.shards.conversation_shards),
            ("notifier", [self.notifier], self.shards.conversation_shards),
            ("presence", self.brokers, self.shards.presence_shards),
        )
        for group, members, shards in groups:
            eventually(
                partial(self._spread, group, members, shards),
                f"the {group} leases spread over {[member.name for member in members]}",
            )

    def _spread(self, group: str, members: list[HubbubProcess], shards: int) -> bool | None:
        owned = [self.owned_shards(process, group) for process in members]
        return True if sum(owned) == shards and max(owned) <= math.ceil(shards / len(members)) else None

    def owned_shards(self, process: HubbubProcess, group: str) -> int:
        """How many shards of the lease ``group`` the process holds, by its ``/metrics``."""
        pattern = rf'^hubbub_lease_owned_shards\{{group="{group}"\}} (\S+)$'
        found = re.search(pattern, self.metrics(process), re.MULTILINE)
        return 0 if found is None else int(float(found.group(1)))

    def stop(self) -> dict[str, int]:
        """Stop every process; their exit codes by name."""
        return self.processes.stop()

    def broker_of_port(self, port: int) -> HubbubProcess | None:
        """The broker whose MQTT (TCP) port is ``port``."""
        return next((broker for broker in self.brokers if broker.ready.mqtt[1] == port), None)

    def metrics(self, process: HubbubProcess) -> str:
        """The process's ``/metrics`` text."""
        response = httpx.get(f"{process.ready.http_url}/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def healthz(self, process: HubbubProcess) -> int:
        """The status code of the process's ``/healthz``."""
        return httpx.get(f"{process.ready.http_url}/healthz", timeout=10).status_code

    def leases(self, group: str) -> dict[int, LeaseRecord]:
        """Every live lease of ``group`` (``persister``, ``notifier``, ``presence``) as NATS has it."""
        return asyncio.run(self._leases(group))

    async def _leases(self, group: str) -> dict[int, LeaseRecord]:
        client = await nats.connect(servers=[server.url for server in self.nats.servers if server.process])
        try:
            js = client.jetstream()
            try:
                bucket = Bucket(bucket_name(group), await js.key_value(bucket_name(group)), js)
            except BucketNotFoundError:
                return {}
            entries = await bucket.latest("shard.>")
            return {record.shard: record for record in map(LeaseRecord.parse, entries.values())}
        finally:
            await client.close()

    def lease_of_conversation(self, conversation_id: str) -> LeaseRecord:
        """The persister lease of the conversation's shard (waited for: shards move at times)."""
        shard = self.shards.conversation(int(conversation_id))
        return eventually(lambda: self.leases("persister").get(shard), f"a persister owns shard {shard}")


ClusterClients = Callable[..., HubbubClient]


@contextmanager
def cluster_clients(cluster: HubbubCluster) -> Iterator[ClusterClients]:
    """Make users' devices, each on the broker the test names (or the one login answers)."""
    with client_factory(cluster.api_url) as make_client:

        def make(
            username: str | None = None,
            *,
            broker: HubbubProcess | None = None,
            device_id: str | None = None,
            transport: Literal["tcp", "websockets"] = "tcp",
            connect: bool = True,
        ) -> HubbubClient:
            client = make_client(username, device_id=device_id, transport=transport, connect=False)
            if broker is not None:
                pin(client, broker)
            if connect:
                client.connect()
            return client

        yield make


def pin(client: HubbubClient, broker: HubbubProcess) -> None:
    """Send the device's next connect to ``broker`` instead of where login said."""
    host, port = broker.ready.mqtt
    client._tokens["mqtt"] = {"host": host, "port": port, "ws_url": broker.ready.ws_url}


def username_of(client: HubbubClient) -> str:
    """The user's name (for logging another device in)."""
    name: str = client.request("GET", "/v1/users/me").json()["username"]
    return name


def assert_once_and_dense(
    client: HubbubClient, conversation_id: str, cmids: set[str]
) -> list[dict[str, Any]]:
    """History holds each of ``cmids`` exactly once and its seq is 1..n without a gap; the rows."""
    rows = all_history(client, conversation_id)
    seqs = [row["seq"] for row in rows]
    assert seqs == list(range(1, len(rows) + 1)), f"seq not dense: {seqs}"
    stored = [row["cmid"] for row in rows]
    doubled = {cmid for cmid in stored if stored.count(cmid) > 1}
    assert not doubled, f"stored twice: {doubled}"
    missing = cmids - set(stored)
    assert not missing, f"{len(missing)} of {len(cmids)} never stored: {sorted(missing)[:5]}"
    return rows


def start_hubbub_cluster(root: Path, nats_cluster: NatsCluster, database_url: str) -> HubbubCluster:
    """Start the processes around running NATS servers and an empty database."""
    gateway = PushGateway()
    processes = DevCluster(
        root, nats_url=nats_cluster.url, database_url=database_url, plan=PLAN, env=_settings(gateway)
    )
    try:
        processes.start()
    except BaseException:
        gateway.close()
        raise
    return HubbubCluster(
        nats_cluster, processes, gateway, ShardMap(PLAN.conversation_shards, PLAN.presence_shards)
    )
