"""Real NATS servers with JetStream (Debian's ``nats-server`` 2.9) in temp dirs, on free ports.

``start_nats(root, size=3)`` starts a cluster of ``size`` servers routed to each other, each with
its own JetStream store directory, client port, cluster port and monitoring port, and returns
once every server's monitoring endpoint reports a JetStream meta group of ``size`` peers with a
leader, all of them current. ``size=1`` is a single server without a cluster block (the laptop
case). A server that does not come up fails the calling test with the tail of every server's log.

Servers can be stopped, killed (``SIGKILL``) and started again one by one, keeping their store
directory and ports, so failover tests can take one of three away mid-burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from nats.errors import Error as NatsError

T = TypeVar("T")

__all__ = ["NatsCluster", "NatsServer", "start_nats", "when_jetstream_answers"]

READY_TIMEOUT_S = 60.0
_POLL_S = 0.05
_LOG_TAIL_LINES = 40
_CLUSTER_NAME = "hubbub-test"


def _nats_server_binary() -> str:
    binary = shutil.which("nats-server")
    if binary is None:
        raise AssertionError("nats-server is not installed: run `make system-deps` (Debian's nats-server)")
    return binary


def _free_ports(count: int) -> list[int]:
    # Hold every socket open until all are chosen, so no two of them get the same port.
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


@dataclass
class NatsServer:
    """One server of the cluster: its ports, config, store and log, and its process if running."""

    name: str
    root: Path
    client_port: int
    cluster_port: int
    monitor_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL of this server."""
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def config_path(self) -> Path:
        """The server's configuration file."""
        return self.root / "server.conf"

    @property
    def log_path(self) -> Path:
        """The server's log file (stdout and stderr)."""
        return self.root / "server.log"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> None:
        """Start the server process (its log is appended to, so restarts keep the history)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [_nats_server_binary(), "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the server and wait for it to exit (``SIGKILL`` after ``timeout``)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def kill(self) -> None:
        """``kill -9``: the server dies without a goodbye to its peers."""
        self.stop(signal.SIGKILL)

    def jsz(self) -> dict[str, object] | None:
        """The monitoring endpoint's JetStream report, or ``None`` while it does not answer."""
        url = f"http://127.0.0.1:{self.monitor_port}/jsz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                report: dict[str, object] = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return report


def _write_config(server: NatsServer, peers: list[NatsServer]) -> None:
    store = server.root / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    lines = [
        f"server_name: {server.name}",
        f"listen: 127.0.0.1:{server.client_port}",
        f"http: 127.0.0.1:{server.monitor_port}",
        "jetstream {",
        f'  store_dir: "{store}"',
        "  max_memory_store: 256MB",
        "  max_file_store: 2GB",
        "}",
    ]
    if len(peers) > 1:
        routes = ", ".join(f"nats-route://127.0.0.1:{peer.cluster_port}" for peer in peers if peer != server)
        lines += [
            "cluster {",
            f"  name: {_CLUSTER_NAME}",
            f"  listen: 127.0.0.1:{server.cluster_port}",
            f"  routes: [{routes}]",
            "}",
        ]
    server.config_path.write_text("\n".join(lines) + "\n")


def _meta_group_ready(report: dict[str, object] | None, size: int) -> bool:
    if report is None:
        return False
    if size == 1:
        return not report.get("disabled", False) and "config" in report
    meta = report.get("meta_cluster")
    if not isinstance(meta, dict) or not meta.get("leader") or meta.get("cluster_size") != size:
        return False
    replicas = meta.get("replicas") or []
    # The leader reports its followers; every server reports the leader it follows.
    if meta.get("leader") == report.get("server_name") and isinstance(replicas, list):
        return len(replicas) == size - 1 and all(
            isinstance(peer, dict) and peer.get("current") and not peer.get("offline") for peer in replicas
        )
    return True


@dataclass
class NatsCluster:
    """Running NATS servers; ``urls`` is what a client is given to connect to any of them."""

    root: Path
    servers: list[NatsServer]
    started_in_s: float = field(default=0.0)

    @property
    def urls(self) -> list[str]:
        """Every server's client URL."""
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        """All servers as one comma-separated URL (the form of ``HUBBUB_NATS_URL``)."""
        return ",".join(self.urls)

    def logs(self) -> str:
        """The tail of every server's log, for a failure message."""
        return "\n".join(
            f"--- {server.name} ({server.log_path}):\n{server.log_tail()}" for server in self.servers
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until every running server reports a complete JetStream meta group with a leader."""
        deadline = time.monotonic() + timeout
        running = [server for server in self.servers if server.process is not None]
        while True:
            for server in running:
                assert server.process is not None
                if server.process.poll() is not None:
                    raise AssertionError(
                        f"nats-server {server.name} exited with {server.process.returncode}\n{self.logs()}"
                    )
            size = len(self.servers)
            if all(_meta_group_ready(server.jsz(), size) for server in running):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"NATS JetStream not ready within {timeout}s\n{self.logs()}")
            time.sleep(_POLL_S)  # polling a child process's HTTP endpoint, not a test's synchronisation

    def stop(self) -> None:
        """Stop every server and remove their directories."""
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_nats(root: Path, size: int = 3) -> NatsCluster:
    """Start ``size`` JetStream servers under ``root`` (routed as one cluster when more than one)."""
    ports = _free_ports(3 * size)
    servers = [
        NatsServer(
            name=f"n{index + 1}",
            root=root / f"n{index + 1}",
            client_port=ports[3 * index],
            cluster_port=ports[3 * index + 1],
            monitor_port=ports[3 * index + 2],
        )
        for index in range(size)
    ]
    cluster = NatsCluster(root, servers)
    began = time.monotonic()
    for server in servers:
        server.root.mkdir(parents=True, exist_ok=True)
        _write_config(server, servers)
        server.start()
    try:
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    cluster.started_in_s = time.monotonic() - began
    return cluster


async def when_jetstream_answers(operation: Callable[[], Awaitable[T]]) -> T:
    """The result of ``operation`` once JetStream takes it, after a server of the cluster died.

    A stream whose leader died is unavailable until its replicas elect another (seconds on 2.9),
    and nothing announces the election to a client: the operation itself is the probe, retried
    on "no response from stream" and time-outs with a short pause between attempts. Bound the
    wait with ``asyncio.timeout``.
    """
    while True:
        try:
            return await operation()
        except (NatsError, TimeoutError):
            await asyncio.sleep(_POLL_S)
