"""A real PostgreSQL server in a temp directory, on a free port, for the life of a test session.

The benchmark (``bench.postgres``) starts its server here too, with PostgreSQL's own durable
defaults instead of the tests' ``fsync=off``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TEST_SETTINGS", "PostgresServer", "start_postgres"]

_USER = "hubbub"
TEST_SETTINGS: Mapping[str, str] = {"fsync": "off"}  # tests throw the server away: durability costs time


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
    if versions:
        return versions[-1]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError(
            "PostgreSQL is not installed: run `make system-deps` (Debian's postgresql package)"
        )
    return Path(pg_ctl).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres_user(argv: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, so drop to Debian's postgres account.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    """A running server; ``url`` is an async SQLAlchemy URL of an empty database."""

    root: Path
    port: int
    bin_dir: Path

    @property
    def url(self) -> str:
        """Where the ``hubbub`` database is."""
        return f"postgresql+asyncpg://{_USER}@127.0.0.1:{self.port}/hubbub"

    @property
    def pid(self) -> int:
        """The postmaster's pid (its backends are its children)."""
        return int((self.root / "data" / "postmaster.pid").read_text().split("\n", 1)[0])

    def create_database(self, name: str) -> str:
        """A fresh database on this server; its URL."""
        subprocess.run(
            _as_postgres_user(
                [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", _USER, name]
            ),
            check=True,
            capture_output=True,
        )
        return f"postgresql+asyncpg://{_USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop at once and remove the data directory."""
        subprocess.run(
            _as_postgres_user(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(settings: Mapping[str, str] = TEST_SETTINGS) -> PostgresServer:
    """Run initdb + pg_ctl start in a fresh temp dir, on loopback only, with ``settings`` (each a ``-c``)."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="hubbub-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    data = root / "data"
    subprocess.run(
        _as_postgres_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", _USER, "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    extra = "".join(f" -c {name}={value}" for name, value in settings.items())
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1{extra}"
    subprocess.run(
        _as_postgres_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "server.log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    server = PostgresServer(root, port, bin_dir)
    server.create_database("hubbub")
    return server
