"""The servers a cluster needs, started on this machine: NATS (JetStream) and PostgreSQL.

``make cluster`` and the tests start the same servers the same way, so this is the one place
that knows how: Debian's ``nats-server`` 2.9 and ``postgresql`` (``make system-deps`` installs
both), each in a directory of its own, on free loopback ports.

``start_nats(root, size=3)`` starts ``size`` servers routed to each other, each with its own
JetStream store directory, client port, cluster port and monitoring port, and returns once every
server's monitoring endpoint reports a JetStream meta group of ``size`` peers with a leader, all
of them current. ``size=1`` is a single server without a cluster block (the laptop case).
Servers can be stopped, killed (``SIGKILL``) and started again one by one, keeping their store
directory and ports, so failover tests can take one of three away mid-burst.

``start_postgres(settings)`` runs initdb and pg_ctl in a fresh directory (as Debian's
``postgres`` account when run as root: initdb refuses root), each setting a ``-c`` (the tests
and ``make cluster`` throw the server away and pass ``fsync=off``; the benchmark keeps the
durable defaults), and creates an empty ``hubbub`` database.

A server that does not come up raises ``StartFailed`` with the tail of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "StartFailed",
    "free_ports",
    "start_nats",
    "start_postgres",
]

READY_TIMEOUT_S = 60.0
_POLL_S = 0.05
_LOG_TAIL_LINES = 40
_CLUSTER_NAME = "hubbub-local"
_PG_USER = "hubbub"


class StartFailed(AssertionError):
    """A local server did not start (or died); the message carries its log tail.

    An ``AssertionError`` so that a test starting one fails, with the log, rather than errors.
    """


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (held open together until all are chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


# -- NATS ---------------------------------------------------------------------------------------


def _nats_server_binary() -> str:
    binary = shutil.which("nats-server")
    if binary is None:
        raise StartFailed("nats-server is not installed: run `make system-deps` (Debian's nats-server)")
    return binary


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
            self.process = subprocess.Popen(  # noqa: S603 - our own config file, no shell
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


def _write_nats_config(server: NatsServer, peers: list[NatsServer]) -> None:
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
        running = [(server, server.process) for server in self.servers if server.process is not None]
        while True:
            for server, process in running:
                if process.poll() is not None:
                    exited = f"nats-server {server.name} exited with {process.returncode}"
                    raise StartFailed(f"{exited}\n{self.logs()}")
            size = len(self.servers)
            if all(_meta_group_ready(server.jsz(), size) for server, _ in running):
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"NATS JetStream not ready within {timeout}s\n{self.logs()}")
            time.sleep(_POLL_S)  # polling a child's HTTP endpoint: nothing announces readiness

    def stop(self, *, remove: bool = True) -> None:
        """Stop every server and (unless ``remove`` is false) remove their directories."""
        for server in self.servers:
            server.stop()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def start_nats(root: Path, size: int = 3) -> NatsCluster:
    """Start ``size`` JetStream servers under ``root`` (routed as one cluster when more than one)."""
    ports = free_ports(3 * size)
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
        _write_nats_config(server, servers)
        server.start()
    try:
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    cluster.started_in_s = time.monotonic() - began
    return cluster


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
    if versions:
        return versions[-1]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise StartFailed("PostgreSQL is not installed: run `make system-deps` (Debian's postgresql package)")
    return Path(pg_ctl).resolve().parent


def _as_postgres_user(argv: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, so drop to Debian's postgres account.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run_pg(argv: list[str], root: Path) -> None:
    """Run a PostgreSQL tool; a failure raises ``StartFailed`` with its output and the server log."""
    done = subprocess.run(_as_postgres_user(argv), check=False, capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        log = root / "server.log"
        tail = (
            "\n".join(log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]) if log.exists() else ""
        )
        raise StartFailed(
            f"{Path(argv[0]).name} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{tail}"
        )


@dataclass
class PostgresServer:
    """A running server; ``url`` is an async SQLAlchemy URL of an empty database."""

    root: Path
    port: int
    bin_dir: Path

    @property
    def url(self) -> str:
        """Where the ``hubbub`` database is."""
        return self.database_url("hubbub")

    @property
    def pid(self) -> int:
        """The postmaster's pid (its backends are its children)."""
        return int((self.root / "data" / "postmaster.pid").read_text().split("\n", 1)[0])

    def database_url(self, name: str) -> str:
        """The async SQLAlchemy URL of database ``name`` on this server."""
        return f"postgresql+asyncpg://{_PG_USER}@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """A fresh database on this server; its URL."""
        createdb = [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", _PG_USER]
        _run_pg([*createdb, name], self.root)
        return self.database_url(name)

    def stop(self) -> None:
        """Stop at once and remove the data directory."""
        subprocess.run(  # noqa: S603 - Debian's pg_ctl, no shell
            _as_postgres_user(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(settings: Mapping[str, str] | None = None, root: Path | None = None) -> PostgresServer:
    """Run initdb + pg_ctl start in ``root`` (a fresh temp dir by default), loopback only.

    ``settings``: server settings, each passed as ``-c name=value`` (none: PostgreSQL's defaults).
    """
    bin_dir = _pg_bin()
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="hubbub-pg-"))
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    data = root / "data"
    _run_pg([str(bin_dir / "initdb"), "-D", str(data), "-U", _PG_USER, "--auth=trust", "-E", "UTF8"], root)
    port = free_ports(1)[0]
    extra = "".join(f" -c {name}={value}" for name, value in (settings or {}).items())
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1{extra}"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log")]
    _run_pg([*pg_ctl, "-w", "start"], root)
    server = PostgresServer(root, port, bin_dir)
    server.create_database("hubbub")
    return server
