"""The "connections" scenario: N idle authenticated connections, the broker's memory per connection.

Why idle: a chat node's connections are mostly idle phones; what each costs at rest bounds
how many one node holds. Each client connects with its own login and subscribes to its
inbox (as a real device does), then stays silent. Memory per connection is the broker's
RSS after all are connected minus its RSS before, divided by N: allocator slack and the
kernel's socket buffers (not in RSS) aside, it is what the broker keeps per client.

Tens of thousands of connections (``run_connections(broker, 50_000)``) need two things the
defaults do not give, both handled here:

- file descriptors: the broker holds one per client and each worker one per client it holds.
  ``raise_fd_limit`` lifts this process's ``RLIMIT_NOFILE`` (soft, and hard when allowed: as root
  up to ``fs.nr_open``) before the broker and the workers start, and they inherit it. Raising
  the hard limit needs ``CAP_SYS_RESOURCE``: a container or sandbox without it (root or not)
  stays at the hard limit it was given. Then the run measures as many connections as that
  limit allows and says so (``ConnectionsResult.limit_note``): never a silent partial number.
  On a real machine: ``ulimit -Hn 65536`` in a root shell before the run, ``LimitNOFILE=65536``
  in a systemd unit, ``--ulimit nofile=65536:65536`` for a container; the ceiling of all of
  them is ``fs.nr_open`` (``sysctl -w fs.nr_open=1048576``);
- ephemeral ports: one source address reaches one broker port from ~28,000 ports
  (``net.ipv4.ip_local_port_range``). Clients to a loopback broker are spread over source
  addresses 127.0.0.2, 127.0.0.3, ... (``CLIENTS_PER_SOURCE`` each; all of 127/8 is loopback on
  Linux, nothing to configure). A client binds its source address before connecting, and a
  bound port still in TIME_WAIT from an earlier step cannot be bound again for 60 s: with
  20,000 per address, the 19,000 step after the two 10,000 steps ran out of ports
  (EADDRINUSE), so each address carries few enough for three steps' worth to fit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench import eventloop
from bench.brokers import SubprocessBroker, close_quietly
from bench.loadgen import ClientSpec
from bench.mqtt_wire import MqttConnection
from bench.relay import RelayError, client_specs

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = [
    "CLIENTS_PER_SOURCE",
    "ConnectionsResult",
    "fd_capacity",
    "raise_fd_limit",
    "run_connections",
    "source_hosts",
]

SETTLE_S = 3.0  # after the last connection: let deferred work (presence, GC) finish before measuring
CLIENTS_PER_SOURCE = 5_000  # per loopback source address: its TIME_WAIT from earlier steps leaves room
_FD_SLACK = 1_000  # the broker's own files, sockets and database beside its clients


def raise_fd_limit(connections: int) -> int:
    """Lift ``RLIMIT_NOFILE`` for ``connections`` clients (children inherit it); the soft limit now."""
    needed = connections + _FD_SLACK
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    except (ValueError, OSError):  # not allowed past the hard limit: go as far as it
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        sys.stderr.write(
            f"[connections] {connections:,} connections need {needed:,} file descriptors; the hard limit is"
            f" {hard:,} and raising it needs CAP_SYS_RESOURCE: {fd_capacity():,} connections at most\n"
        )
    return soft


def fd_capacity() -> int:
    """How many client connections this process's ``RLIMIT_NOFILE`` (inherited by the broker) allows."""
    return max(0, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - _FD_SLACK)


def source_hosts(host: str, count: int) -> list[str | None]:
    """The source address of each of ``count`` clients: spread over 127.0.0.2.. for a loopback broker."""
    if not ipaddress.ip_address(host).is_loopback or host == "::1":
        return [None] * count
    return [f"127.0.0.{2 + index // CLIENTS_PER_SOURCE}" for index in range(count)]


@dataclass
class ConnectionsResult:
    """One broker's idle-connection measurement."""

    broker: str
    connections: int
    connected: int
    connect_seconds: float
    rss_before: int
    rss_after: int
    asked: int = 0  # connections asked for, when the file-descriptor limit allowed fewer (``connections``)
    fd_limit: int = 0  # the soft RLIMIT_NOFILE the run had (broker and workers inherit it)

    @property
    def limit_note(self) -> str:
        """Why fewer connections than asked were measured (empty when all were)."""
        if self.asked <= self.connections:
            return ""
        return (
            f"{self.asked:,} asked, {self.connections:,} measured: the file-descriptor limit here is"
            f" {self.fd_limit:,} (RLIMIT_NOFILE hard limit; raising it needs CAP_SYS_RESOURCE, which this"
            " machine lacks). Raise it with `ulimit -Hn`, systemd `LimitNOFILE=`, or a container's"
            " `--ulimit nofile=`, up to `fs.nr_open`"
        )

    @property
    def bytes_per_connection(self) -> float:
        """RSS growth per connected client."""
        return (self.rss_after - self.rss_before) / max(1, self.connected)

    @property
    def connect_rate(self) -> float:
        """Connections (CONNECT + SUBSCRIBE) completed per second."""
        return self.connected / self.connect_seconds if self.connect_seconds > 0 else 0.0


async def _hold(
    host: str, port: int, specs: list[tuple[ClientSpec, str | None]], pipe: Connection, concurrency: int
) -> None:
    sem = asyncio.Semaphore(concurrency)
    conns: list[MqttConnection] = []

    async def one(spec: ClientSpec, source: str | None) -> None:
        async with sem, asyncio.timeout(30):
            conn = await MqttConnection.open(
                host,
                port,
                client_id=spec.client_id,
                username=spec.username,
                password=spec.password,
                keepalive=600,
                source_host=source,
            )
            await conn.subscribe([(spec.topic, 1)])
            conns.append(conn)

    started = time.perf_counter()
    results = await asyncio.gather(*(one(spec, source) for spec, source in specs), return_exceptions=True)
    seconds = time.perf_counter() - started
    failed = [r for r in results if isinstance(r, BaseException)]
    pipe.send(("ready", len(conns), seconds, repr(failed[0]) if failed else ""))
    try:
        await asyncio.to_thread(pipe.poll, 600)
    finally:
        for conn in conns:
            conn.close()


def _worker(
    host: str, port: int, specs: list[tuple[ClientSpec, str | None]], pipe: Connection, concurrency: int
) -> None:
    try:
        eventloop.run(_hold(host, port, specs, pipe, concurrency))
    finally:
        pipe.close()


def run_connections(
    broker: SubprocessBroker, count: int, workers: int = 2, concurrency: int = 100
) -> ConnectionsResult:
    """Start ``broker``, hold ``count`` idle connections, measure its RSS growth and connect rate.

    When the file-descriptor limit cannot be raised far enough, as many as it allows are
    measured and the result says so (``limit_note``).
    """
    ctx = multiprocessing.get_context("spawn")
    procs = []
    pipes: list[Connection] = []
    asked = count
    try:
        fd_limit = raise_fd_limit(count)  # before the broker starts: it inherits the limit
        count = min(count, fd_capacity())
        host, port = broker.start()
        specs, _ = client_specs(broker, count)
        sourced = list(zip(specs, source_hosts(host, len(specs)), strict=True))
        time.sleep(1.0)
        before = broker.rss_bytes() or 0
        for w in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker,
                args=(host, port, sourced[w::workers], child, concurrency // workers),
                daemon=True,
            )
            proc.start()
            child.close()
            procs.append(proc)
            pipes.append(parent)
        ready = []
        for pipe in pipes:
            if not pipe.poll(300):
                raise RelayError("connections worker never reported")
            ready.append(pipe.recv())
        first_error = next((r[3] for r in ready if r[3]), "")
        if first_error:
            sys.stderr.write(f"[{broker.name} connections] some failed: {first_error}\n")
        time.sleep(SETTLE_S)
        after = broker.rss_bytes() or 0
        result = ConnectionsResult(
            broker.name,
            count,
            sum(r[1] for r in ready),
            max(r[2] for r in ready),
            before,
            after,
            asked=asked,
            fd_limit=fd_limit,
        )
        sys.stderr.write(
            f"[{broker.name} connections] {result.connected:,} connected in {result.connect_seconds:.1f} s"
            f" ({result.connect_rate:,.0f}/s), {result.bytes_per_connection / 1024:.1f} KB each\n"
        )
        if result.limit_note:
            sys.stderr.write(f"[{broker.name} connections] {result.limit_note}\n")
        return result
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
        close_quietly(broker)
