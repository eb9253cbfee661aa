"""A whole Hubbub cluster on this machine: ``make cluster`` (``python -m launcher.devcluster``).

Three NATS servers (JetStream, routed), PostgreSQL, two broker nodes, two persisters, a notifier
and an API, each a real ``hubbub <role>`` process started from the CLI with its settings in the
environment (``HUBBUB_NATS_URL`` makes it a cluster member), on free loopback ports, each in a
directory of its own under one temp dir. Every process prints one ``hubbub ready: ...`` line
when it serves; this waits for all of them, prints where to connect, and stops everything on
Ctrl-C (or SIGTERM).

The end-to-end cluster tests start the same set with ``DevCluster`` and use its handles to kill
(``kill -9``), pause (``SIGSTOP``), resume and restart any process.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from launcher.local_servers import StartFailed, start_nats, start_postgres

__all__ = ["READY_PREFIX", "ClusterPlan", "DevCluster", "Endpoints", "HubbubProcess", "main"]

logger = logging.getLogger(__name__)

READY_PREFIX = "hubbub ready:"
READY_TIMEOUT_S = 120.0  # six Python processes importing the platform at once on two cores
STOP_TIMEOUT_S = 30.0
_LOG_TAIL_LINES = 60
_ROLES = ("broker", "persister", "notifier", "api", "up")  # "up": the one-node platform (tests)


@dataclass(frozen=True)
class Endpoints:
    """What a process announced in its ready line (``name=value`` pairs)."""

    fields: Mapping[str, str]

    @classmethod
    def parse(cls, line: str) -> Endpoints:
        """``hubbub ready: mqtt=127.0.0.1:1883 http=http://...`` as endpoints."""
        pairs = line.removeprefix(READY_PREFIX).split()
        return cls(dict(pair.split("=", 1) for pair in pairs if "=" in pair))

    @property
    def http_url(self) -> str:
        """``http://host:port`` of its HTTP port (``/healthz``, ``/metrics``, the API on ``api``)."""
        return self.fields["http"]

    @property
    def mqtt(self) -> tuple[str, int]:
        """Host and port of MQTT over TCP (broker nodes)."""
        host, port = self.fields["mqtt"].rsplit(":", 1)
        return host, int(port)

    @property
    def ws_url(self) -> str:
        """MQTT over WebSocket (broker nodes): ``ws=`` as a URL, else ``/mqtt`` on the HTTP port."""
        ws = self.fields.get("ws")
        if ws is None:
            return self.http_url.replace("http://", "ws://", 1) + "/mqtt"
        return ws if "://" in ws else f"ws://{ws}/mqtt"


class HubbubProcess:
    """One ``hubbub <role>`` process: started from the CLI with ``env``, stdout and stderr to ``log_path``.

    A thread copies the process's output into its log and hands each line to ``wait_ready``,
    so a process that dies or never says it is ready fails with the tail of that log.
    """

    def __init__(self, name: str, role: str, env: Mapping[str, str], root: Path) -> None:
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}")
        self.name = name
        self.role = role
        self.env = dict(env)
        self.root = root
        self.log_path = root / f"{name}.log"
        self.process: subprocess.Popen[str] | None = None
        self.endpoints: Endpoints | None = None
        self.starts = 0
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def pid(self) -> int:
        """The running process's id."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    @property
    def ready(self) -> Endpoints:
        """The endpoints of the last ready line (after ``wait_ready``)."""
        if self.endpoints is None:
            raise RuntimeError(f"{self.name} has not announced itself ready")
        return self.endpoints

    def start(self) -> None:
        """Start the process (in a session of its own: a terminal's Ctrl-C reaches only us)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} is running already")
        self.root.mkdir(parents=True, exist_ok=True)
        self.endpoints = None
        self._lines = queue.Queue()
        log = self.log_path.open("a", encoding="utf-8")
        self.starts += 1
        log.write(f"--- start {self.starts} of {self.name}: hubbub {self.role}\n")
        log.flush()
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, our own CLI
            [sys.executable, "-m", "launcher.cli", self.role],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None  # noqa: S101 - PIPE was asked for
        threading.Thread(
            target=_copy_lines,
            args=(self.process.stdout, log, self._lines),
            name=f"{self.name}-log",
            daemon=True,
        ).start()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Endpoints:
        """The endpoints of the process's ready line; ``StartFailed`` with its log if none comes."""
        line = self.wait_for_line(lambda line: line.startswith(READY_PREFIX), "a ready line", timeout)
        self.endpoints = Endpoints.parse(line)
        return self.endpoints

    def wait_for_line(self, predicate: Callable[[str], bool], what: str, timeout: float) -> str:
        """The next line of output ``predicate`` holds for; ``StartFailed`` with the log if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise StartFailed(f"{self.name}: no {what} within {timeout}s\n{self.log_tail()}") from None
            if line is None:
                code = self.process.wait() if self.process is not None else None
                raise StartFailed(f"{self.name} exited ({code}) before {what}\n{self.log_tail()}")
            if predicate(line):
                return line

    def running(self) -> bool:
        """Whether the process is alive (a paused one is)."""
        return self.process is not None and self.process.poll() is None

    def send(self, sig: int) -> None:
        """Send ``sig`` to the process's group."""
        if self.running():
            os.killpg(self.pid, sig)

    def kill(self) -> int:
        """``kill -9``: no clean-up of any kind; the exit code."""
        return self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """``SIGSTOP``: frozen mid-whatever, its connections open, its leases running out."""
        self.send(signal.SIGSTOP)

    def resume(self) -> None:
        """``SIGCONT``: it carries on from where it froze, believing what it believed."""
        self.send(signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Signal the process (resumed first if paused) and wait; ``SIGKILL`` after ``timeout``."""
        if self.running():
            if sig != signal.SIGKILL:
                self.send(signal.SIGCONT)
            self.send(sig)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Wait for the process to exit (``SIGKILL`` after ``timeout``); its exit code."""
        process = self.process
        if process is None:
            return 0
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait(timeout=timeout)

    def restart(self, timeout: float = READY_TIMEOUT_S) -> Endpoints:
        """Start again with the same settings (same node name) after a stop or a kill; ready."""
        if self.running():
            self.stop()
        self.start()
        return self.wait_ready(timeout)

    def log(self) -> str:
        """Everything the process wrote so far (all its starts)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the log, for a failure message."""
        return f"--- {self.name} ({self.log_path}):\n" + "\n".join(self.log().splitlines()[-lines:])


def _copy_lines(stream: IO[str], log: IO[str], lines: queue.Queue[str | None]) -> None:
    with stream, log:
        for line in iter(stream.readline, ""):
            log.write(line)
            log.flush()
            lines.put(line.rstrip("\n"))
    lines.put(None)


@dataclass(frozen=True)
class ClusterPlan:
    """How many processes of each role, and the cluster-wide settings they share."""

    brokers: int = 2
    persisters: int = 2
    notifiers: int = 1
    apis: int = 1
    conversation_shards: int = 32
    presence_shards: int = 8

    def names(self) -> list[tuple[str, str]]:
        """``(name, role)`` of every process, in start order."""
        counts = {
            "broker": self.brokers,
            "persister": self.persisters,
            "notifier": self.notifiers,
            "api": self.apis,
        }
        return [(f"{role}-{index}", role) for role, count in counts.items() for index in range(1, count + 1)]


class DevCluster:
    """The Hubbub processes of one cluster around given NATS servers and database."""

    def __init__(
        self,
        root: Path,
        *,
        nats_url: str,
        database_url: str,
        plan: ClusterPlan | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.plan = plan or ClusterPlan()
        self.nats_url = nats_url
        self.database_url = database_url
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("HUBBUB_")}
        shared = (
            inherited
            | {
                "HUBBUB_NATS_URL": nats_url,
                "HUBBUB_DATABASE_URL": database_url,
                "HUBBUB_SECRET_KEY": secrets.token_urlsafe(
                    48
                ),  # every process signs and checks the same tokens
                "HUBBUB_BIND": "127.0.0.1",
                "HUBBUB_MQTT_PORT": "0",
                "HUBBUB_HTTP_PORT": "0",
                "HUBBUB_BROKER_WS_PORT": "0",
                "HUBBUB_CONVERSATION_SHARDS": str(self.plan.conversation_shards),
                "HUBBUB_PRESENCE_SHARDS": str(self.plan.presence_shards),
                "HUBBUB_LOG_LEVEL": "INFO",
                "HUBBUB_CONFIG_FILE": str(
                    root / "none.toml"
                ),  # the environment alone, whatever is in the cwd
            }
            | dict(env or {})
        )
        self.processes: dict[str, HubbubProcess] = {}
        for node_id, (name, role) in enumerate(self.plan.names(), start=1):
            own = {
                "HUBBUB_NODE_NAME": name,
                "HUBBUB_NODE_ID": str(node_id),
                "HUBBUB_DATA_DIR": str(root / name),
            }
            self.processes[name] = HubbubProcess(name, role, shared | own, root / name)

    def __getitem__(self, name: str) -> HubbubProcess:
        return self.processes[name]

    def role(self, role: str) -> list[HubbubProcess]:
        """Every process of ``role``, in name order."""
        return [process for process in self.processes.values() if process.role == role]

    @property
    def api(self) -> HubbubProcess:
        """The (first) API process."""
        return self.role("api")[0]

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start the first process, then every other at once; wait until each is ready.

        The first one alone creates what every process shares (the schema, the registry bucket,
        the streams) before the others ask for it. All are stopped if one fails.
        """
        first, *others = self.processes.values()
        try:
            first.start()
            first.wait_ready(timeout)
            for process in others:
                process.start()
            for process in others:
                process.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> dict[str, int]:
        """Stop every process (each running one gets one SIGTERM); the exit codes by name."""
        for process in self.processes.values():
            process.send(signal.SIGCONT)
            process.send(signal.SIGTERM)
        return {name: process.wait_exit() for name, process in self.processes.items()}

    def logs(self) -> str:
        """The tail of every process's log, for a failure message."""
        return "\n".join(process.log_tail() for process in self.processes.values())

    def summary(self) -> str:
        """Where to connect, for people."""
        api = self.api.ready.http_url
        lines = [
            "Hubbub cluster is up.",
            f"  web chat:  {api}/",
            f"  REST API:  {api}/v1  (docs at {api}/docs; login answers the least loaded broker)",
        ]
        for broker in self.role("broker"):
            host, port = broker.ready.mqtt
            lines.append(f"  {broker.name}:  mqtt://{host}:{port}  {broker.ready.ws_url}")
        lines += [
            f"  NATS:      {self.nats_url}",
            f"  database:  {self.database_url}",
        ]
        lines += [
            f"  {name}: {process.ready.http_url}/healthz  /metrics"
            for name, process in self.processes.items()
        ]
        lines.append(f"  logs:      {self.root}/<process>.log (removed on stop unless --keep)")
        return "\n".join(lines)


def _serve(cluster: DevCluster, stopping: threading.Event) -> None:
    """Until ``stopping``: tell once about each process that exits (the rest keep running)."""
    reported: set[str] = set()
    while not stopping.wait(1.0):
        for name, process in cluster.processes.items():
            if name not in reported and not process.running():
                reported.add(name)
                code = process.process.returncode if process.process is not None else None
                print(f"{name} exited ({code}):\n{process.log_tail(20)}", file=sys.stderr, flush=True)  # noqa: T201


def main(argv: list[str] | None = None) -> int:
    """``make cluster``: start everything, print where to connect, stop everything on Ctrl-C."""
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", type=int, default=2)
    parser.add_argument("--persisters", type=int, default=2)
    parser.add_argument("--notifiers", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) after stopping")
    args = parser.parse_args(argv)
    plan = ClusterPlan(brokers=args.brokers, persisters=args.persisters, notifiers=args.notifiers)
    root = Path(tempfile.mkdtemp(prefix="hubbub-cluster-"))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"starting NATS x3, PostgreSQL and {len(plan.names())} Hubbub processes in {root} ...", flush=True)  # noqa: T201
    with contextlib.ExitStack() as running:
        try:
            nats = start_nats(root / "nats", size=3)
            running.callback(nats.stop, remove=False)
            postgres = start_postgres({"fsync": "off"})  # a throw-away dev cluster in a temp dir
            running.callback(postgres.stop)
            cluster = DevCluster(root, nats_url=nats.url, database_url=postgres.url, plan=plan)
            cluster.start()
            running.callback(cluster.stop)
        except StartFailed as exc:
            print(f"make cluster: {exc}", file=sys.stderr)  # noqa: T201
            return 1
        print(f"{cluster.summary()}\nCtrl-C stops everything.", flush=True)  # noqa: T201
        _serve(cluster, stopping)
        print("stopping ...", flush=True)  # noqa: T201
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
