"""Cassandra as the message store: the chat pipeline on it, and the history read path.

``python -m bench.cassandra chat`` runs the closed-loop 1:1 chat of ``bench.chat`` with
``hubbub up`` storing history in a real single-node Cassandra (the tests' node, from
``cassandra-node/``; ``make cassandra-jars`` first), and reports delivered/s, p50/p99 and
the CPU per delivered message of the platform and of the Cassandra JVM, both over the
measured window.

``python -m bench.cassandra history`` fills one conversation with ``--messages`` messages
(1,000,000 by default) straight through the store's own ``commit`` (no MQTT, no platform in
the way), in batches of ``FILL_BATCH``: each commit sends its dedupe reads and its packed
writes concurrently, so the fill is bound by Cassandra, not by round trips. Then it pages
through the conversation as a client scrolls back:
``GET /v1/conversations/{id}/messages?before=&limit=50`` at random anchors, one request at a
time, and reports p50/p99 per page.

``python -m bench all`` runs both on one node (``run_cassandra``), beside the SQLite and
PostgreSQL (``bench.postgres``) runs: section 6, whose chat table (``store_chat_table``) has a
row per store.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
import uuid
from array import array
from dataclasses import dataclass, field

import httpx
from cassandra import OperationTimedOut, Timeout  # type: ignore[import-untyped]

from bench.chat import _SETTINGS, PipelineResult, _measure, _pairs
from bench.hubbub_up import start_platform, tree_cpu_seconds
from bench.relay import RelayError, _quantile
from hubbub.envelope import AcceptedMessage
from persister import cassandra_store
from tests.support.cassandra import CassandraServer, start_cassandra

__all__ = [
    "FILL_BATCH",
    "CassandraRun",
    "HistoryResult",
    "cassandra_markdown",
    "main",
    "run_cassandra",
    "run_chat_on_cassandra",
    "run_history",
    "store_chat_table",
    "us_per_message",
]

PAGE = 50
FILL_BATCH = 10_000
_FILL_ATTEMPTS = 3
# The tests' node has a 512 MiB heap; a million messages flush and compact memtables all along.
_JVM_OPTIONS = ("-XX:TieredStopAtLevel=4", "-Xms1g", "-Xmx1g")  # both JIT compilers, unlike the tests
_FAILURES = (RelayError, RuntimeError, OSError, ValueError, TimeoutError, httpx.HTTPError)


@dataclass(frozen=True)
class HistoryResult:
    """Paging back through one long conversation."""

    messages: int
    pages: int
    p50_ms: float
    p99_ms: float
    fill_s: float


@dataclass
class CassandraRun:
    """What ``run_cassandra`` measured, and what failed."""

    chat: PipelineResult | None = None
    history: HistoryResult | None = None
    started_in_s: float = float("nan")
    errors: list[str] = field(default_factory=list)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _settings(server: CassandraServer) -> dict[str, str]:
    return {**_SETTINGS, "cassandra_hosts": server.host, "cassandra_keyspace": f"bench_{uuid.uuid4().hex}"}


def us_per_message(cpu_pct: float, delivered_per_s: float) -> float:
    """CPU microseconds per delivered message from a CPU % (of one core) and a rate."""
    return cpu_pct / 100 / delivered_per_s * 1e6 if delivered_per_s > 0 else math.nan


def run_chat_on_cassandra(
    server: CassandraServer, pairs: int, duration: float, warmup: float, window: int
) -> PipelineResult:
    """The closed-loop chat run with history in Cassandra (``store_cpu_pct``: the JVM's)."""
    platform = start_platform(_settings(server))
    try:
        devices = _pairs(platform, pairs)
        return _measure(
            platform,
            devices,
            scenario="chat",
            label="cassandra",
            duration=duration,
            warmup=warmup,
            window=window,
            store_cpu=lambda: tree_cpu_seconds(server.process.process.pid),
        )
    finally:
        platform.stop()


async def _commit_retrying(
    store: cassandra_store.CassandraMessageStore, batch: list[AcceptedMessage]
) -> None:
    """Commit, again after a server timeout: a failed commit rolls back, and cmids make it idempotent."""
    for attempt in range(1, _FILL_ATTEMPTS + 1):
        try:
            await store.commit(batch)
        except (OperationTimedOut, Timeout) as exc:
            if attempt == _FILL_ATTEMPTS:
                raise
            _say(f"[history] commit timed out ({type(exc).__name__}); again, attempt {attempt + 1}")
        else:
            return


async def _fill(
    server: CassandraServer, keyspace: str, conversation_id: int, sender: int, count: int
) -> None:
    store = await cassandra_store.connect([server.host], keyspace)
    try:
        now = int(time.time() * 1000)
        for start in range(0, count, FILL_BATCH):
            batch = [
                AcceptedMessage(
                    conversation_id, (now << 22) + n, sender, "bench", f"fill-{n}", f"message {n}", now
                )
                for n in range(start, min(start + FILL_BATCH, count))
            ]
            await _commit_retrying(store, batch)
            if (start // FILL_BATCH) % 10 == 0:
                _say(f"[history] {start + len(batch):,} of {count:,} messages stored")
    finally:
        await store.close()


def run_history(server: CassandraServer, messages: int, pages: int) -> HistoryResult:
    """Fill one conversation, then time ``pages`` random ``before=`` pages over REST."""
    settings = _settings(server)
    platform = start_platform(settings)
    try:
        reader, writer = platform.make_users(2)
        with httpx.Client(base_url=platform.http_url, timeout=60) as http:
            body: dict[str, object] = {"type": "direct", "user_id": str(writer.user_id)}
            conversation_id = platform.create_conversation(http, reader, body)
            fill_started = time.monotonic()
            asyncio.run(
                _fill(server, settings["cassandra_keyspace"], conversation_id, writer.user_id, messages)
            )
            fill_s = time.monotonic() - fill_started
            _say(f"[history] {messages:,} messages stored in {fill_s:.0f} s; paging")
            headers = {"Authorization": f"Bearer {reader.token}"}
            path = f"/v1/conversations/{conversation_id}/messages"
            latencies = array("q")
            rng = random.Random(13)  # noqa: S311 - anchors for a benchmark, not secrets
            for _ in range(pages):
                before = rng.randint(PAGE + 1, messages + 1)
                sent = time.perf_counter_ns()
                response = http.get(path, params={"before": before, "limit": PAGE}, headers=headers)
                latencies.append((time.perf_counter_ns() - sent) // 1000)
                response.raise_for_status()
                seqs = [m["seq"] for m in response.json()["messages"]]
                if seqs != list(range(before - PAGE, before)):
                    raise RuntimeError(f"page before {before} came back as seqs {seqs[:3]}..{seqs[-3:]}")
    finally:
        platform.stop()
    values = sorted(latencies)
    result = HistoryResult(
        messages, pages, _quantile(values, 0.5) / 1000, _quantile(values, 0.99) / 1000, fill_s
    )
    _say(f"[history] p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms per page of {PAGE}")
    return result


def run_cassandra(
    *,
    pairs: int,
    duration: float,
    warmup: float,
    window: int,
    messages: int,
    pages: int,
    scenarios: tuple[str, ...] = ("chat", "history"),
) -> CassandraRun:
    """Start one node, run ``scenarios`` on it (a failing one is recorded), stop it."""
    run = CassandraRun()
    server = start_cassandra(_JVM_OPTIONS)
    run.started_in_s = server.started_in_s
    _say(f"[cassandra] node ready in {server.started_in_s:.1f} s at {server.host}")
    try:
        if "chat" in scenarios:
            try:
                run.chat = run_chat_on_cassandra(server, pairs, duration, warmup, window)
            except _FAILURES as exc:
                _say(f"[cassandra chat] FAILED: {exc}")
                run.errors.append(f"cassandra chat: {exc}")
        if "history" in scenarios:
            try:
                run.history = run_history(server, messages, pages)
            except _FAILURES as exc:
                _say(f"[cassandra history] FAILED: {exc}")
                run.errors.append(f"cassandra history: {exc}")
    finally:
        server.stop()
    return run


def store_chat_table(chats: list[tuple[str, PipelineResult]]) -> list[str]:
    """A row per store: rate, latency, CPU per delivered message of the platform and of the store's server."""
    lines = [
        "| store | delivered/s | p50 ms | p99 ms | platform CPU µs/msg | store server CPU µs/msg |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in chats:
        store_us = us_per_message(r.store_cpu_pct, r.delivered_per_s)
        lines.append(
            f"| {name} | {r.delivered_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{us_per_message(r.platform_cpu_pct, r.delivered_per_s):,.0f} | "
            f"{'—' if math.isnan(store_us) else f'{store_us:,.0f}'} |"
        )
    return lines


def cassandra_markdown(
    run: CassandraRun,
    sqlite_chat: PipelineResult | None,
    postgres: tuple[PipelineResult, str] | None = None,
) -> list[str]:
    """Section 6 of the report: the closed loop on SQLite and PostgreSQL (server named) beside Cassandra."""
    postgres_chat, postgres_server = postgres if postgres is not None else (None, "PostgreSQL")
    named = (("SQLite", sqlite_chat), ("PostgreSQL", postgres_chat), ("Cassandra", run.chat))
    chats = [(name, r) for name, r in named if r is not None]
    started = "" if math.isnan(run.started_in_s) else f"; it started in {run.started_in_s:.0f} s"
    lines = ["## 6. History stores: SQLite, PostgreSQL, Cassandra", ""]
    if chats:
        lines += [
            (
                "The same closed-loop chat 1:1 as section 2 (same pairs, window and duration), with "
                f"`hubbub up` storing history in SQLite (section 2's run), in {postgres_server} (a server "
                "of its own on this machine, holding the accounts too), and in a real single-node Apache "
                f"Cassandra 5.0 on this machine (the tests' node, both JIT tiers, 1 GiB heap{started}). "
                "CPU per delivered message over the measured window: the "
                "platform process (with its SQLite writer, for the SQLite run) and the store's server "
                "(PostgreSQL's postmaster and backends; the Cassandra JVM)."
            ),
            "",
            *store_chat_table(chats),
        ]
    h = run.history
    if h is not None:
        lines += [
            "",
            (
                f"History read path: one conversation of {h.messages:,} messages, filled straight through "
                f"the store's `commit` (no MQTT) in batches of {FILL_BATCH:,}, each sending its dedupe reads "
                f"and packed writes concurrently ({h.fill_s:.0f} s, {h.messages / max(h.fill_s, 1e-9):,.0f} "
                f"messages/s). Then {h.pages:,} requests `GET /v1/conversations/{{id}}/messages?before=N&"
                f"limit={PAGE}` at random anchors, one at a time, over REST: time per page."
            ),
            "",
            "| conversation | pages | p50 ms | p99 ms | fill s |",
            "| ---: | ---: | ---: | ---: | ---: |",
            (
                f"| {h.messages:,} messages | {h.pages:,} of {PAGE} | {h.p50_ms:.1f} | {h.p99_ms:.1f} | "
                f"{h.fill_s:.0f} |"
            ),
        ]
    lines += [f"- failed: {error}" for error in run.errors]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.cassandra``."""
    parser = argparse.ArgumentParser(prog="python -m bench.cassandra", description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    chat = sub.add_parser("chat", help="the 1:1 chat pipeline with history in Cassandra")
    chat.add_argument("--pairs", type=int, default=50)
    chat.add_argument("--duration", type=float, default=8.0)
    chat.add_argument("--warmup", type=float, default=2.0)
    chat.add_argument("--window", type=int, default=5)
    history = sub.add_parser("history", help="pages of 50 before= from one long conversation")
    history.add_argument("--messages", type=int, default=1_000_000)
    history.add_argument("--pages", type=int, default=1_000)
    args = parser.parse_args(argv)
    run = run_cassandra(
        pairs=getattr(args, "pairs", 0),
        duration=getattr(args, "duration", 0.0),
        warmup=getattr(args, "warmup", 0.0),
        window=getattr(args, "window", 0),
        messages=getattr(args, "messages", 0),
        pages=getattr(args, "pages", 0),
        scenarios=(args.scenario,),
    )
    sys.stdout.write("\n".join(cassandra_markdown(run, None)))
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
