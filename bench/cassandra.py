"""Cassandra as the message store: the chat pipeline on it, and the history read path.

``python -m bench.cassandra chat`` runs the closed-loop 1:1 chat of ``bench.chat`` with
``hubbub up`` storing history in a real single-node Cassandra (the tests' node, from
``cassandra-node/``; ``make cassandra-jars`` first), and reports delivered/s, p50/p99 and
the CPU per delivered message of the platform and of Cassandra.

``python -m bench.cassandra history`` fills one conversation with ``--messages`` messages
(1,000,000 by default) straight through the store's own commit (batches of 1,000), then
pages through it as a client scrolls back: ``GET /v1/conversations/{id}/messages?before=&limit=50``
at random anchors, one request at a time, and reports p50/p99 per page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from array import array
from pathlib import Path

import httpx

from bench.chat import _SETTINGS, _measure, _pairs
from bench.hubbub_up import start_platform
from bench.relay import _quantile
from hubbub.envelope import AcceptedMessage
from persister import cassandra_store
from tests.support.cassandra import CassandraServer, start_cassandra

__all__ = ["main", "run_chat_on_cassandra", "run_history"]

_PAGE = 50
_FILL_BATCH = 1_000


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settings(server: CassandraServer) -> dict[str, str]:
    return {**_SETTINGS, "cassandra_hosts": server.host, "cassandra_keyspace": f"bench_{uuid.uuid4().hex}"}


def run_chat_on_cassandra(
    server: CassandraServer, pairs: int, duration: float, warmup: float, window: int
) -> str:
    """The closed-loop chat run with history in Cassandra; one Markdown table row."""
    platform = start_platform(_settings(server))
    try:
        devices = _pairs(platform, pairs)
        cassandra_before = _cpu_seconds(server.process.process.pid)
        started = time.monotonic()
        result = _measure(
            platform,
            devices,
            scenario="chat",
            label="cassandra",
            duration=duration,
            warmup=warmup,
            window=window,
        )
        cassandra_cpu_s = _cpu_seconds(server.process.process.pid) - cassandra_before
        elapsed = time.monotonic() - started
    finally:
        platform.stop()
    delivered = max(result.delivered_per_s * (duration - warmup), 1.0)
    platform_us = result.platform_cpu_pct / 100 * (duration - warmup) / delivered * 1e6
    # Cassandra's CPU is taken over the whole run (warm-up included): an upper bound per message.
    cassandra_us = cassandra_cpu_s / max(result.delivered_per_s * elapsed, 1.0) * 1e6
    return (
        f"| chat 1:1, {pairs} pairs, Cassandra | {result.delivered_per_s:,.0f} | {result.p50_ms:.1f} |"
        f" {result.p99_ms:.1f} | {platform_us:.0f} | {cassandra_us:.0f} |"
    )


async def _fill(
    server: CassandraServer, keyspace: str, conversation_id: int, sender: int, count: int
) -> None:
    store = await cassandra_store.connect([server.host], keyspace)
    try:
        now = int(time.time() * 1000)
        for start in range(0, count, _FILL_BATCH):
            batch = [
                AcceptedMessage(
                    conversation_id, (now << 22) + n, sender, "bench", f"fill-{n}", f"message {n}", now
                )
                for n in range(start, min(start + _FILL_BATCH, count))
            ]
            await store.commit(batch)
            if start // _FILL_BATCH % 100 == 0:
                _say(f"[history] {start + len(batch):,} of {count:,} messages stored")
    finally:
        await store.close()


def run_history(server: CassandraServer, messages: int, pages: int) -> str:
    """Fill one conversation, then time ``pages`` random ``before=`` pages over REST; a table row."""
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
                before = rng.randint(_PAGE + 1, messages + 1)
                sent = time.perf_counter_ns()
                response = http.get(path, params={"before": before, "limit": _PAGE}, headers=headers)
                latencies.append((time.perf_counter_ns() - sent) // 1000)
                response.raise_for_status()
                seqs = [m["seq"] for m in response.json()["messages"]]
                if seqs != list(range(before - _PAGE, before)):
                    raise RuntimeError(f"page before {before} came back as seqs {seqs[:3]}..{seqs[-3:]}")
    finally:
        platform.stop()
    values = sorted(latencies)
    p50, p99 = _quantile(values, 0.5) / 1000, _quantile(values, 0.99) / 1000
    run = f"history, {messages:,} messages, {pages:,} pages of {_PAGE}"
    return f"| {run} | {p50:.1f} | {p99:.1f} | {fill_s:.0f} |"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.cassandra``."""
    parser = argparse.ArgumentParser(prog="python -m bench.cassandra", description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    chat = sub.add_parser("chat", help="the 1:1 chat pipeline with history in Cassandra")
    chat.add_argument("--pairs", type=int, default=500)
    chat.add_argument("--duration", type=float, default=8.0)
    chat.add_argument("--warmup", type=float, default=2.0)
    chat.add_argument("--window", type=int, default=4)
    history = sub.add_parser("history", help="pages of 50 before= from one long conversation")
    history.add_argument("--messages", type=int, default=1_000_000)
    history.add_argument("--pages", type=int, default=2_000)
    args = parser.parse_args(argv)
    server = start_cassandra(["-XX:TieredStopAtLevel=4"])  # both JIT compilers, unlike the tests
    _say(f"[cassandra] node ready in {server.started_in_s:.1f} s at {server.host}")
    try:
        if args.scenario == "chat":
            header = "| run | delivered/s | p50 ms | p99 ms | platform CPU µs/msg | Cassandra CPU µs/msg |"
            row = run_chat_on_cassandra(server, args.pairs, args.duration, args.warmup, args.window)
        else:
            header = "| run | p50 ms | p99 ms | fill s |"
            row = run_history(server, args.messages, args.pages)
    finally:
        server.stop()
    separator = "|" + "---|" * (header.count("|") - 1)
    sys.stdout.write(f"{header}\n{separator}\n{row}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
