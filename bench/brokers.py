"""Brokers under test: how to start one, stop it, and what each benchmark client logs in with.

Why an interface: the relay scenario must run unchanged against stock amqtt, Mosquitto and the
project's own broker, whose clients log in with username = user id and password = a JWT and may
only subscribe to ``user/{uid}/inbox``. So both the credentials and the topic of every client
come from the ``BrokerUnderTest``, never from the scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

from bench.mqtt_wire import MqttConnection

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"


class BrokerStartError(RuntimeError):
    """The broker process exited or never accepted an MQTT connection in time."""


@dataclass(frozen=True)
class Credentials:
    """What one client sends in CONNECT."""

    client_id: str
    username: str | None = None
    password: str | None = None


def free_port() -> int:
    """Ask the kernel for a free loopback port (tiny race until the broker binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def require_loopback(host: str) -> None:
    """Refuse any target that is not on this machine: the benchmark may only load loopback."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    addrs = {info[4][0] for info in infos}
    if not addrs or not all(ipaddress.ip_address(a).is_loopback for a in addrs):
        raise ValueError(f"target {host!r} resolves to {sorted(addrs)}: only loopback may be targeted")


class BrokerUnderTest(ABC):
    """A broker the harness can start, stop and log clients into.

    Subscriber ``i`` (0-based) connects with ``credentials_for(i)`` and subscribes to
    ``topic_for(i)``; the publisher connects with ``publisher_credentials(0)`` and publishes to
    the subscribers' topics. Subclass this to plug in a broker that needs real logins.
    """

    name: str = "broker"

    @abstractmethod
    def start(self) -> tuple[str, int]:
        """Start (or locate) the broker and return its loopback (host, port) once it accepts clients."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what ``start`` started; must be safe after a failed start and when called twice."""

    def credentials_for(self, client_index: int) -> Credentials:
        """Credentials of subscriber ``client_index``; anonymous by default."""
        return Credentials(client_id=f"bench-sub-{client_index}")

    def topic_for(self, client_index: int) -> str:
        """The exact topic subscriber ``client_index`` subscribes to (and the publisher targets)."""
        return f"bench/{client_index}"

    def publisher_credentials(self, publisher_index: int) -> Credentials:
        """Credentials of publisher ``publisher_index``; anonymous by default."""
        return Credentials(client_id=f"bench-pub-{publisher_index}")

    def version(self) -> str:
        """A human-readable version string for the report."""
        return "unknown"

    def cpu_seconds(self) -> float | None:
        """CPU time the broker has used so far, if the harness can see its process."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SubprocessBroker(BrokerUnderTest):
    """A broker the harness runs as its own child process, with files in a private temp dir."""

    ready_timeout = 30.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None
        self.port = 0

    @abstractmethod
    def command(self, workdir: Path, port: int) -> list[str]:
        """The argv that runs the broker on ``port``, with any config written into ``workdir``."""

    def environment(self, workdir: Path, port: int) -> dict[str, str] | None:
        """The child's environment (``None``: inherit ours); a broker configured by env overrides it."""
        del workdir, port
        return None

    def working_dir(self, workdir: Path) -> Path:
        """Where the child runs: its temp dir unless a broker needs its own source tree."""
        return workdir

    def ready(self, workdir: Path) -> None:
        """Called once the broker accepts MQTT: a hook to read what it generated (secrets, ids)."""
        del workdir

    @property
    def pid(self) -> int | None:
        """The broker process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def rss_bytes(self) -> int | None:
        """Resident memory of the broker process, from /proc (Linux)."""
        if self._proc is None:
            return None
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def start(self) -> tuple[str, int]:
        """Start the child, then wait until an MQTT CONNECT succeeds (or it dies / times out)."""
        self.stop()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{self.name}-")
        workdir = Path(self._tmp.name)
        self.port = free_port()
        argv = self.command(workdir, self.port)
        self._log = (workdir / "broker.log").open("wb")
        self._proc = subprocess.Popen(  # noqa: S603 - argv is built here from fixed parts, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.working_dir(workdir),
            env=self.environment(workdir, self.port),
        )
        deadline = time.monotonic() + self.ready_timeout
        for _ in range(int(self.ready_timeout / 0.1) + 1):
            if self._proc.poll() is not None:
                raise BrokerStartError(f"{self.name} exited with {self._proc.returncode}: {self.log_tail()}")
            if asyncio.run(_probe(LOOPBACK, self.port)):
                self.ready(workdir)
                return LOOPBACK, self.port
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.stop()
        raise BrokerStartError(f"{self.name} did not accept MQTT within {self.ready_timeout} s")

    def cpu_seconds(self) -> float | None:
        """User + system time of the broker process, from /proc (Linux)."""
        if self._proc is None:
            return None
        try:
            stat = Path(f"/proc/{self._proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, size: int = 2000) -> str:
        """The end of the broker's output, for error messages."""
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "broker.log"
        return path.read_bytes()[-size:].decode(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL: the child is ours, addressed by its own pid."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


async def _probe(host: str, port: int) -> bool:
    """True once the broker completes an anonymous CONNECT/CONNACK."""
    try:
        async with asyncio.timeout(2.0):
            conn = await MqttConnection.open(host, port, client_id="bench-probe")
    except (OSError, TimeoutError, ConnectionError, EOFError):
        return False
    except Exception:  # noqa: BLE001 - any refusal still means the broker is up and speaking MQTT
        return True
    await conn.disconnect()
    return True


class StockAmqtt(SubprocessBroker):
    """amqtt 0.12.1 as shipped, run by ``bench/run_stock_amqtt.py`` in a separate Python process."""

    name = "amqtt"

    def command(self, workdir: Path, port: int) -> list[str]:
        """Run the runner script with this interpreter (the project venv has amqtt pinned)."""
        del workdir
        return [sys.executable, str(HERE / "run_stock_amqtt.py"), "--port", str(port)]

    def version(self) -> str:
        """The installed amqtt distribution's version."""
        return f"amqtt {importlib.metadata.version('amqtt')}"


def mosquitto_binary() -> str:
    """Locate the Debian package's binary (it lives in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerStartError("mosquitto not found: apt-get install -y mosquitto")
    return found


class Mosquitto(SubprocessBroker):
    """Eclipse Mosquitto, the reference: its own config in a temp dir, one loopback listener."""

    name = "mosquitto"

    def command(self, workdir: Path, port: int) -> list[str]:
        """Write a minimal config (anonymous, no persistence, errors to stderr) and run it."""
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            "max_keepalive 65535\n"
        )
        return [mosquitto_binary(), "-c", str(conf)]

    def version(self) -> str:
        """First line of ``mosquitto -h``, e.g. 'mosquitto version 2.0.11'."""
        try:
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [mosquitto_binary(), "-h"], capture_output=True, timeout=5, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired, BrokerStartError):
            return "mosquitto (version unknown)"
        return out.decode(errors="replace").splitlines()[0].strip() if out else "mosquitto"


class ExternalTarget(BrokerUnderTest):
    """An already-running broker given as ``host:port[,username,password-command]``.

    ``username`` may contain ``{i}`` (the client index; ``pub0`` for the publisher). The
    password command is split like a shell line but run without a shell, with ``{i}`` and
    ``{username}`` substituted in each argument; its stdout, stripped, is the password. Without
    placeholders it runs once. One process per client is slow at 10,000 clients: for that,
    subclass ``BrokerUnderTest`` and mint passwords in-process.
    """

    name = "target"

    def __init__(self, spec: str, topic_template: str = "bench/{i}", name: str = "target") -> None:
        hostport, *rest = spec.split(",", 2)
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--target must be host:port[,username,password-command], got {spec!r}")
        require_loopback(host)
        self.host, self.port = host, int(port)
        self.username = rest[0] if rest else None
        self.password_argv = shlex.split(rest[1]) if len(rest) > 1 else None
        self.topic_template = topic_template
        self.name = name
        self._cache: dict[str, str] = {}

    def start(self) -> tuple[str, int]:
        """Nothing to start: only check that something listens there."""
        with socket.create_connection((self.host, self.port), timeout=5):
            pass
        return self.host, self.port

    def stop(self) -> None:
        """Not ours to stop."""

    def _password(self, index: str, username: str) -> str | None:
        if self.password_argv is None:
            return None
        argv = [a.replace("{i}", index).replace("{username}", username) for a in self.password_argv]
        key = "\0".join(argv)
        if key not in self._cache:
            result = subprocess.run(  # noqa: S603 - the operator's own command, run without a shell
                argv, capture_output=True, timeout=10, check=True
            )
            self._cache[key] = result.stdout.decode().strip()
        return self._cache[key]

    def _credentials(self, index: str, client_id: str) -> Credentials:
        if self.username is None:
            return Credentials(client_id=client_id)
        username = self.username.replace("{i}", index)
        return Credentials(client_id=client_id, username=username, password=self._password(index, username))

    def credentials_for(self, client_index: int) -> Credentials:
        """Username/password from the templates, with ``{i}`` = the subscriber index."""
        return self._credentials(str(client_index), f"bench-sub-{client_index}")

    def publisher_credentials(self, publisher_index: int) -> Credentials:
        """Username/password from the templates, with ``{i}`` = ``pub<n>``."""
        return self._credentials(f"pub{publisher_index}", f"bench-pub-{publisher_index}")

    def topic_for(self, client_index: int) -> str:
        """``--target-topic`` with ``{i}`` and ``{username}`` (default ``bench/{i}``)."""
        username = self.credentials_for(client_index).username or ""
        return self.topic_template.replace("{i}", str(client_index)).replace("{username}", username)

    def version(self) -> str:
        """Whatever listens on the given address."""
        return f"external {self.host}:{self.port}"


def close_quietly(broker: BrokerUnderTest) -> None:
    """Stop a broker during error handling without masking the original error."""
    with contextlib.suppress(Exception):
        broker.stop()
