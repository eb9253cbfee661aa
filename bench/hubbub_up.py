"""``hubbub up`` for the pipeline scenarios: started in a subprocess, users made fast, then stopped.

Why insert users straight into the account store (the data dir's SQLite, or the PostgreSQL
database of ``database_url``): signing up goes through argon2 (tens of milliseconds each by
design), which would make a 1,000-user setup slower than the measurement. The broker and the
API only verify JWTs minted with the data dir's secret, so users and devices rows plus a
token per device are a real login. Conversations are created over REST, as a
client would, so membership and ids are the platform's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from bench.hubbub import REPO_ROOT, TOKEN_TTL_S, hubbub_env, insert_devices

__all__ = ["BenchUser", "RunningPlatform", "start_platform", "tree_cpu_seconds"]

READY_PREFIX = "hubbub ready:"
READY_TIMEOUT_S = 60.0
USER_ID_BASE = 10_000_000  # far above anything the platform's own sign-up would hand out


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of process ``pid`` and of its children, live or ended; ``None`` once it is gone.

    A platform and its SQLite writer process; PostgreSQL's postmaster and its backends; a JVM.
    """
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ticks = 0
        for each in [str(pid), *children]:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    except OSError:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchUser:
    """A user with one device and its access token."""

    user_id: int
    device_id: str
    token: str


class RunningPlatform:
    """A ``hubbub up`` child process and what the scenarios need from it."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        tmp: tempfile.TemporaryDirectory[str],
        log: IO[str],
        database_url: str | None = None,
    ) -> None:
        self.proc = proc
        self._tmp = tmp
        self._log = log
        self.data_dir = Path(tmp.name) / "data"
        self.database: Path | str = database_url or self.data_dir / "hubbub.db"
        self.mqtt_host = ""
        self.mqtt_port = 0
        self.http_url = ""

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the platform process and its children (the SQLite writer)."""
        return tree_cpu_seconds(self.proc.pid)

    def make_users(self, count: int) -> list[BenchUser]:
        """``count`` users with one device each, written into the platform's account store."""
        from hubbub.tokens import TokenCodec  # noqa: PLC0415 - the project's own code

        codec = TokenCodec((self.data_dir / "secret.key").read_text().strip(), access_ttl_s=TOKEN_TTL_S)
        first = USER_ID_BASE + int(time.time()) % 1000 * 10_000
        users = [BenchUser(first + k, f"bd{first + k}", "") for k in range(count)]
        insert_devices(self.database, [(u.user_id, u.device_id) for u in users])
        return [BenchUser(u.user_id, u.device_id, codec.issue_access(u.user_id, u.device_id)) for u in users]

    def create_conversation(self, http: httpx.Client, creator: BenchUser, body: dict[str, object]) -> int:
        """``POST /v1/conversations`` as ``creator``; the conversation id."""
        response = http.post(
            "/v1/conversations", json=body, headers={"Authorization": f"Bearer {creator.token}"}
        )
        response.raise_for_status()
        return int(response.json()["id"])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; our own child, by its pid."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        self._tmp.cleanup()


def start_platform(settings: Mapping[str, str], *, profile_to: Path | None = None) -> RunningPlatform:
    """``hubbub up`` on free ports with ``settings`` (lower-case names); waits for its ready line.

    With ``profile_to``, under cProfile (its event-loop thread), written there when stopped.
    """
    tmp = tempfile.TemporaryDirectory(prefix="bench-hubbub-up-")
    data_dir = Path(tmp.name) / "data"
    env = hubbub_env(data_dir, **{**settings, "mqtt_port": "0", "http_port": "0"})
    log = (Path(tmp.name) / "platform.log").open("w")
    profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, *profiler, "-m", "launcher.cli", "up"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    running = RunningPlatform(proc, tmp, log, settings.get("database_url"))
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert proc.stdout is not None  # noqa: S101 - PIPE above
    for line in proc.stdout:
        if line.startswith(READY_PREFIX):
            fields = dict(part.split("=", 1) for part in line.removeprefix(READY_PREFIX).split())
            host, port = fields["mqtt"].rsplit(":", 1)
            running.mqtt_host, running.mqtt_port, running.http_url = host, int(port), fields["http"]
            return running
        if time.monotonic() > deadline:
            break
    running.stop()
    raise RuntimeError("hubbub up did not announce readiness")
