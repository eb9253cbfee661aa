"""A broker node's link to NATS blacks out under it: its devices still get what the gap lost.

The node under test is a third broker started here whose NATS connection goes through a TCP
relay (``_Relay``) the test controls: a blackout drops every byte both ways while both sockets
stay open, as a network blip does, so the server goes on sending the node its users' events into
the void. The relay answers the node's PINGs meanwhile, so the node notices nothing however long
the test's work in the gap takes on a loaded machine (unanswered, two PINGs would end it: 10-15 s).
During the blackout a message to a user of that node is committed and published on
``hubbub.inbox.<uid>``, lost, and a user a device there watches goes offline. Then the relay
cuts the connection; nats-py reconnects at once, and the node tells its devices ``resync``
(``cluster/inbox_resync.py``): the real client library answers with its catch-up and holds the
message, its device having stayed connected all along; and the node's retained presence follows
the presence bucket, so the watcher sees the change the gap had hidden.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from client import HubbubClient
from launcher.devcluster import HubbubProcess
from tests.support.chat import direct_conversation, no_event_before
from tests.support.cluster import GRACE_S, OUTCOME_S, ClusterClients, HubbubCluster, username_of
from tests.support.mqtt import Device

pytestmark = pytest.mark.timeout(300)

_NODE = "broker-resync"
_NODE_ID = "40"  # the cluster's own processes are 1 to 6
_CHUNK = 65536


class _Relay:
    """A TCP relay to one NATS server that can black out (drop everything, sockets kept) and cut."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._client_open: set[socket.socket] = set()  # client sides not closed by the client
        self._dark = threading.Event()
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                far = socket.create_connection(self._upstream)
            except OSError:
                near.close()
                continue
            with self._lock:
                self._pairs.append((near, far))
                self._client_open.add(near)
            for source, sink, pong in ((near, far, True), (far, near, False)):
                pump = threading.Thread(
                    target=self._pump, args=(source, sink, pong), name="relay-pump", daemon=True
                )
                pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket, pong: bool) -> None:
        """Copy ``source`` into ``sink`` until either end closes; close ``source``.

        While dark nothing is copied, and ``pong``: the PINGs ``source`` sends are answered.
        """
        with contextlib.suppress(OSError):
            while chunk := source.recv(_CHUNK):
                if not self._dark.is_set():
                    sink.sendall(chunk)
                elif pong and (pings := chunk.count(b"PING\r\n")):
                    source.sendall(b"PONG\r\n" * pings)
        with self._lock:
            self._client_open.discard(source)
        for end in (source, sink):  # wakes the other direction's pump
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        source.close()

    def black_out(self) -> None:
        """Drop every byte from now on, both ways, keeping the connections open."""
        self._dark.set()

    def dark_connections(self) -> int:
        """Connections the blackout holds whose client has not given up on them."""
        with self._lock:
            return len(self._client_open)

    def cut(self) -> None:
        """End the blackout: close the connections it held (the client reconnects), relay again."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self._client_open.clear()
            self._dark.clear()
        for near, far in pairs:  # their pumps wake, and close them
            for end in (near, far):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting and close everything."""
        self._listener.close()
        self.cut()


@pytest.fixture
def relay(cluster: HubbubCluster) -> Iterator[_Relay]:
    server = cluster.nats.servers[0]
    made = _Relay(("127.0.0.1", server.client_port))
    yield made
    made.close()


@pytest.fixture
def node(cluster: HubbubCluster, relay: _Relay, tmp_path: Path) -> Iterator[HubbubProcess]:
    """A third broker node whose NATS connection goes through ``relay``."""
    root = tmp_path / _NODE
    env = cluster.brokers[0].env | {
        "HUBBUB_NATS_URL": f"nats://127.0.0.1:{relay.port}",
        "HUBBUB_NODE_NAME": _NODE,
        "HUBBUB_NODE_ID": _NODE_ID,
        "HUBBUB_DATA_DIR": str(root),
    }
    started = HubbubProcess(_NODE, "broker", env, root)
    started.start()
    try:
        started.wait_ready()
        yield started
    finally:
        relay.cut()
        code = started.stop()
        assert code == 0, f"{_NODE} stopped with {code}\n{started.log_tail()}"


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        device.close()


def _device(client: HubbubClient, broker: HubbubProcess, devices: list[Device]) -> Device:
    host, port = broker.ready.mqtt
    device = Device(
        host=host,
        port=port,
        client_id=client.device_id,
        username=client.user_id,
        password=client._tokens["access_token"],
    )
    devices.append(device)
    assert device.connect() == 0
    return device


def _presence_of(watcher: Device, user: HubbubClient) -> str:
    """The status of the next presence message ``watcher`` gets, which must be ``user``'s."""
    body = orjson.loads(watcher.next_message(timeout=GRACE_S + OUTCOME_S).payload)
    assert body["user_id"] == user.user_id
    status: str = body["status"]
    return status


def test_a_device_whose_node_lost_nats_gets_what_the_gap_lost_through_a_resync(
    cluster: HubbubCluster,
    users: ClusterClients,
    relay: _Relay,
    node: HubbubProcess,
    devices: list[Device],
) -> None:
    other = cluster.brokers[1]
    alice = users(broker=other)
    bob = users(broker=node)
    carol = users(broker=other)
    conversation_id = direct_conversation(alice, bob)
    assert bob.settled(OUTCOME_S)
    watcher = users(broker=node, connect=False)
    watcher.request("POST", "/v1/friends/requests", json={"user_id": carol.user_id}).raise_for_status()
    carol.request("POST", f"/v1/friends/requests/{watcher.user_id}/accept").raise_for_status()
    here = _device(watcher, node, devices)  # the watcher's device on the node that loses NATS
    there = _device(users(username_of(watcher), broker=other, connect=False), other, devices)
    for device in (here, there):
        assert device.subscribe(f"presence/{carol.user_id}") == [1]
        assert _presence_of(device, carol) == "online"

    relay.black_out()
    alice.send(conversation_id, "sent in the gap")
    assert alice.outbox.emptied.wait(OUTCOME_S), "the message sent in the gap was never acknowledged"
    # Committed, so published: into the blackout, which the node has not noticed yet.
    assert relay.dark_connections(), "the node left the blackout by itself before the message"
    carol.disconnect()
    assert _presence_of(there, carol) == "offline"  # decided and published during the gap
    relay.cut()

    before = no_event_before(bob, lambda event: event["kind"] == "resync")
    assert not [event for event in before if event["kind"] == "message"], "delivered live, not lost"
    assert bob.settled(OUTCOME_S)
    held = bob.timelines[conversation_id].ordered()
    assert [message["text"] for message in held] == ["sent in the gap"]
    assert bob.connected.is_set()
    metrics = cluster.metrics(node)
    assert re.search(
        r'^hubbub_inbox_resync_rounds_total\{node="broker-resync"\} [1-9]', metrics, re.MULTILINE
    )
    assert re.search(r'^hubbub_inbox_resync_told_total\{node="broker-resync"\} [1-9]', metrics, re.MULTILINE)
    assert _presence_of(here, carol) == "offline"
