"""A real single-node Apache Cassandra in a temp directory, on free ports, for a test session.

The jars come from Maven Central (``make cassandra-jars``: ``cassandra-node/pom.xml`` copied into
``.cache/cassandra/lib``), Java from the machine (``$JAVA_HOME`` or ``java`` on ``PATH``);
``cassandra-node/`` holds the project's own ``cassandra.yaml`` (a template: ports and directories
are filled in here), ``jvm.options`` and ``logback.xml``. The node is ready when it logs
"Startup complete" (CQL is listening by then) and a CQL query answers; a node that does not
start is a test failure carrying its log tail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import string
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from persister.cassandra_store.driver import connect_session, consistency_level, wait
from tests.support.platform import REPO_ROOT
from tests.support.processes import ReadyProcess, start_ready_process

__all__ = ["START_TIMEOUT_S", "CassandraServer", "launch_cassandra", "start_cassandra"]

CONFIG_DIR = REPO_ROOT / "cassandra-node"
LIB_DIR = REPO_ROOT / ".cache" / "cassandra" / "lib"
_READY_LINE = "Startup complete"
# A cold JVM loads Cassandra in ~13 s on an idle 2-core machine; other test suites may share it.
START_TIMEOUT_S = 240.0
_STOP_TIMEOUT_S = 30.0
_LOG_TAIL_LINES = 60


def _free_ports(count: int) -> list[int]:
    """Distinct ports free right now (held open together so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        raise RuntimeError("Java is not installed: run `make system-deps` (Debian's openjdk-17-jre-headless)")
    return java


def _jvm_options() -> list[str]:
    lines = (CONFIG_DIR / "jvm.options").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class CassandraServer:
    """A running node; ``host`` is its CQL endpoint as ``HUBBUB_CASSANDRA_HOSTS`` takes it."""

    root: Path
    native_port: int
    process: ReadyProcess
    started_in_s: float
    launched_at: float  # time.monotonic() when its JVM was started

    @property
    def host(self) -> str:
        """``127.0.0.1:port`` of the native (CQL) transport."""
        return f"127.0.0.1:{self.native_port}"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The end of the server's system.log and of its stderr (JVM errors land there)."""
        system_log = self.root / "logs" / "system.log"
        parts = [self.process.log()]
        if system_log.exists():
            parts.append("\n".join(system_log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def wait_ready(self) -> None:
        """Wait for "Startup complete" and a CQL answer; stop it and raise with its log if none comes."""
        try:
            self.process.wait_for_line(lambda line: _READY_LINE in line, timeout=START_TIMEOUT_S)
            # A loop of its own in a thread: the fixture may be first asked for by an async test,
            # whose loop is already running in this thread.
            with ThreadPoolExecutor(1, thread_name_prefix="cassandra-ready") as pool:
                pool.submit(asyncio.run, _query_answers(self.host)).result()
        except Exception as exc:
            tail = self.log_tail()
            self.stop()
            raise AssertionError(f"Cassandra did not start: {exc}\n--- its log tail ---\n{tail}") from exc
        self.started_in_s = time.monotonic() - self.launched_at

    def stop(self) -> None:
        """Kill the node (its data is thrown away, so there is nothing to drain) and remove its files."""
        self.process.stop(signal.SIGKILL, timeout=_STOP_TIMEOUT_S)
        shutil.rmtree(self.root, ignore_errors=True)


async def _query_answers(host: str) -> None:
    """Raise unless a CQL query answers at ``host``, over the store's own connection code."""
    session = await connect_session([host], consistency=consistency_level("ONE"))
    try:
        await wait(session.execute_async("SELECT release_version FROM system.local"))
    finally:
        await asyncio.to_thread(session.cluster.shutdown)


def start_cassandra(extra_jvm_options: Sequence[str] = ()) -> CassandraServer:
    """Start a node from ``cassandra-node/`` in a fresh temp dir; raise with its log if it does not start.

    ``extra_jvm_options`` come after ``jvm.options``, so they override its flags.
    """
    server = launch_cassandra(extra_jvm_options)
    server.wait_ready()
    return server


def launch_cassandra(extra_jvm_options: Sequence[str] = (), *, niceness: int = 0) -> CassandraServer:
    """Start the node's JVM at ``niceness`` without waiting for it (``CassandraServer.wait_ready`` does)."""
    if not (LIB_DIR / ".copied").exists():
        raise RuntimeError(f"no Cassandra jars in {LIB_DIR}: run `make cassandra-jars` (Maven Central)")
    root = Path(tempfile.mkdtemp(prefix="hubbub-cassandra-"))
    storage, ssl_storage, native = _free_ports(3)
    template = string.Template((CONFIG_DIR / "cassandra.yaml").read_text(encoding="utf-8"))
    config = root / "cassandra.yaml"
    config.write_text(
        template.substitute(
            root=root, storage_port=storage, ssl_storage_port=ssl_storage, native_port=native
        ),
        encoding="utf-8",
    )
    argv = [
        _java(),
        *_jvm_options(),
        *extra_jvm_options,
        f"-Dcassandra.config={config.as_uri()}",
        f"-Dcassandra.logdir={root / 'logs'}",
        f"-Dcassandra.storagedir={root}",
        f"-Dlogback.configurationFile={CONFIG_DIR / 'logback.xml'}",
        "-cp",
        f"{LIB_DIR}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]
    launched = time.monotonic()
    process = start_ready_process(
        argv, env=dict(os.environ), cwd=root, log_path=root / "stderr.log", niceness=niceness
    )
    return CassandraServer(root, native, process, 0.0, launched)
