"""PostgreSQL as the store: the chat pipeline with history (and accounts) in a real PostgreSQL server.

``python -m bench.postgres chat`` runs the closed-loop 1:1 chat of ``bench.chat`` with
``hubbub up`` on ``HUBBUB_DATABASE_URL`` of a PostgreSQL server of its own (Debian's
binaries, started as the tests start theirs: ``tests.support.postgres``), and reports
delivered/s, p50/p99 and the CPU per delivered message of the platform and of PostgreSQL
(the postmaster and its backends), both over the measured window.

The server runs with PostgreSQL's durable defaults (``fsync``, ``synchronous_commit``), not
the tests' ``fsync=off``: each commit of the persister waits for its WAL flush, as in
production. The accounts live in the same database (one engine, as ``hubbub up`` has it), so
the benchmark's users are inserted there (``bench.hubbub.insert_devices``).

``python -m bench all`` runs it beside the SQLite and Cassandra runs (section 6).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Mapping

from bench.cassandra import store_chat_table
from bench.chat import _SETTINGS, PipelineResult, _measure, _pairs
from bench.hubbub_up import start_platform, tree_cpu_seconds
from tests.support.postgres import PostgresServer, start_postgres

__all__ = ["BENCH_SETTINGS", "describe", "main", "run_chat_on_postgres"]

BENCH_SETTINGS: Mapping[str, str] = {}  # PostgreSQL's own defaults: durable commits


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def describe(server: PostgresServer) -> str:
    """What the server is, for the report."""
    version = server.bin_dir.parent.name
    return f"PostgreSQL {version} (Debian's) with its default settings (fsync and synchronous_commit on)"


def _start() -> PostgresServer:
    try:
        return start_postgres(BENCH_SETTINGS)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip()[-500:]
        raise RuntimeError(f"PostgreSQL did not start ({' '.join(map(str, exc.cmd[:3]))}): {detail}") from exc


def run_chat_on_postgres(
    pairs: int, duration: float, warmup: float, window: int
) -> tuple[PipelineResult, str]:
    """The closed-loop chat on a fresh server (``store_cpu_pct``: PostgreSQL's), and what the server was."""
    server = _start()
    try:
        _say(f"[postgres] {describe(server)} on port {server.port}")
        platform = start_platform({**_SETTINGS, "database_url": server.url})
        try:
            devices = _pairs(platform, pairs)
            result = _measure(
                platform,
                devices,
                scenario="chat",
                label="postgres",
                duration=duration,
                warmup=warmup,
                window=window,
                store_cpu=lambda: tree_cpu_seconds(server.pid),
            )
        finally:
            platform.stop()
        return result, describe(server)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.postgres``: the section's table with the PostgreSQL row alone."""
    parser = argparse.ArgumentParser(prog="python -m bench.postgres", description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    chat = sub.add_parser("chat", help="the 1:1 chat pipeline with history in PostgreSQL")
    chat.add_argument("--pairs", type=int, default=50)
    chat.add_argument("--duration", type=float, default=8.0)
    chat.add_argument("--warmup", type=float, default=2.0)
    chat.add_argument("--window", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        result, server = run_chat_on_postgres(args.pairs, args.duration, args.warmup, args.window)
    except (RuntimeError, OSError, ValueError, TimeoutError) as exc:
        _say(f"[postgres chat] FAILED: {exc}")
        return 1
    sys.stdout.write(
        "\n".join([f"Server: {server}.", "", *store_chat_table([("PostgreSQL", result)])]) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
