"""A broker node whose NATS link a test can black out: a TCP relay to one NATS server.

``Relay`` drops every byte both ways while both sockets stay open, as a network blip does, so the
server goes on sending the node its events into the void; it answers the node's PINGs meanwhile,
so the node notices nothing however long the test's work in the gap takes on a loaded machine
(unanswered, two PINGs would end it: 10-15 s). ``cut`` ends the blackout by closing the
connections: nats-py reconnects at once, through the relay again. ``relayed_broker`` starts a
third broker node of the session's Hubbub cluster whose NATS connection goes through a relay.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from launcher.devcluster import HubbubProcess
from tests.support.cluster import HubbubCluster

__all__ = ["Relay", "relayed_broker"]

_NODE_ID = "40"  # the cluster's own processes are 1 to 6
_CHUNK = 65536


class Relay:
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


@contextlib.contextmanager
def relayed_broker(cluster: HubbubCluster, relay: Relay, root: Path, name: str) -> Iterator[HubbubProcess]:
    """A third broker node named ``name`` whose NATS connection goes through ``relay``, running."""
    env = cluster.brokers[0].env | {
        "HUBBUB_NATS_URL": f"nats://127.0.0.1:{relay.port}",
        "HUBBUB_NODE_NAME": name,
        "HUBBUB_NODE_ID": _NODE_ID,
        "HUBBUB_DATA_DIR": str(root),
    }
    started = HubbubProcess(name, "broker", env, root)
    started.start()
    try:
        started.wait_ready()
        yield started
    finally:
        relay.cut()
        code = started.stop()
        assert code == 0, f"{name} stopped with {code}\n{started.log_tail()}"
