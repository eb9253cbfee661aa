"""A cluster process told to stop while its NATS is gone still exits, and says why.

Brokers and a persister sent SIGTERM at the moment their NATS servers were killed were found
alive over an hour later. Here, before the fix, such a node waited one NATS request timeout
(5 s) per lease shard, one after another, and then failed (exit 1) draining a reconnecting
connection. A node stopping without NATS can neither deregister nor release its leases (those
run out by their TTL, which the design allows), but it must exit, cleanly (0), with one warning
that NATS was not there to hear it.

Each process here (a broker and a persister) runs against a NATS server of their own, so killing
it hurts no other test: one server, its streams and buckets of one replica, since what is under
test is a node whose every NATS server is gone (a cluster of three all killed is the same to it),
and one server with single replicas starts the nodes seconds sooner than three.

Three moments: SIGTERM at once after the kill, once the node has logged that it is reconnecting,
and just before the kill; and, for contrast, a stop with NATS up: the leases are released and
nothing is said of NATS.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.devcluster import ClusterPlan, DevCluster
from tests.support.nats import NatsCluster, start_nats
from tests.support.platform import CHEAP_PASSWORD_HASH
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.timeout(300)

# Generous: a stop without NATS waits out its shutdown deadline, on a loaded two-core machine.
EXIT_S = 60.0
_PLAN = ClusterPlan(brokers=1, persisters=1, notifiers=0, apis=0, conversation_shards=8, presence_shards=2)
_UNREACHABLE = "NATS unreachable at shutdown"
_RECONNECTING = "lost; reconnecting"


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsCluster]:
    """A NATS server for this test alone (it gets killed)."""
    nats = start_nats(tmp_path / "nats", size=1)
    yield nats
    nats.stop()


@pytest.fixture
def nodes(tmp_path: Path, own_nats: NatsCluster, postgres: PostgresServer) -> Iterator[DevCluster]:
    """A broker and a persister on ``own_nats``, ready."""
    database_url = postgres.create_database(f"shutdown_{uuid.uuid4().hex[:12]}")
    processes = DevCluster(
        tmp_path / "hubbub",
        nats_url=own_nats.url,
        database_url=database_url,
        plan=_PLAN,
        env={"HUBBUB_CONNECT_TIMEOUT_S": "2", "HUBBUB_NATS_REPLICAS": "1"} | CHEAP_PASSWORD_HASH,
    )
    processes.start()
    yield processes
    processes.stop()


def _kill(nats: NatsCluster) -> None:
    for server in nats.servers:
        server.kill()


def _stop(nodes: DevCluster) -> None:
    for process in nodes.processes.values():
        process.send(signal.SIGTERM)


def _assert_each_exits_saying_why(nodes: DevCluster) -> None:
    codes = {name: process.wait_exit(EXIT_S) for name, process in nodes.processes.items()}
    assert codes == dict.fromkeys(nodes.processes, 0), f"exit codes {codes}\n{nodes.logs()}"
    for name, process in nodes.processes.items():
        log = process.log()
        assert log.count(_UNREACHABLE) == 1, f"{name} did not say once why it left\n{process.log_tail()}"
        assert "Traceback" not in log, f"{name} logged a stack\n{process.log_tail()}"


def test_nodes_stopped_as_their_nats_dies_exit(own_nats: NatsCluster, nodes: DevCluster) -> None:
    _kill(own_nats)
    _stop(nodes)
    _assert_each_exits_saying_why(nodes)


def test_nodes_stopped_while_reconnecting_exit(own_nats: NatsCluster, nodes: DevCluster) -> None:
    _kill(own_nats)
    for process in nodes.processes.values():
        process.wait_for_line(lambda line: _RECONNECTING in line, "a reconnecting line", EXIT_S)
    _stop(nodes)
    _assert_each_exits_saying_why(nodes)


def test_nodes_whose_nats_dies_as_they_stop_exit(own_nats: NatsCluster, nodes: DevCluster) -> None:
    _stop(nodes)
    _kill(own_nats)
    _assert_each_exits_saying_why(nodes)


def test_nodes_stopped_with_nats_up_release_and_say_nothing_of_it(nodes: DevCluster) -> None:
    _stop(nodes)
    codes = {name: process.wait_exit(EXIT_S) for name, process in nodes.processes.items()}
    assert codes == dict.fromkeys(nodes.processes, 0), f"exit codes {codes}\n{nodes.logs()}"
    for name, process in nodes.processes.items():
        log = process.log()
        assert _UNREACHABLE not in log, f"{name} warned of NATS with NATS up\n{process.log_tail()}"
        assert ": released" in log, f"{name} released no lease\n{process.log_tail()}"
        assert "left the cluster" in log, process.log_tail()
