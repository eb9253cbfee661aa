r"""The "connections" scenario: N authenticated devices connect; the connect rate and memory per connection.

Why: a chat node's connections are mostly idle phones. What each costs at rest bounds how many
one node holds, and how fast a node takes them on bounds how quickly a dead node's devices are
absorbed (issue #15: >= 5,000 connects/s per broker process, >= 0.35 x Mosquitto). Memory per
connection is the broker's RSS after all are connected minus its RSS before, divided by N:
allocator slack and the kernel's socket buffers (not in RSS) aside, it is what the broker keeps
per client.

What one connect is, for every broker alike (a device's own start-up): TCP, CONNECT with the
device's credentials (for Hubbub its JWT, verified, and the account store asked whether the
device is still signed in), CONNACK, one SUBSCRIBE to the device's inbox and to a retained
presence topic, SUBACK, and the retained presence delivered. A connect is counted once that
retained message arrived. Hubbub retains ``presence/{uid}`` itself when the device connects
(the device subscribes to its own, which needs no directory query); for any other broker the
harness retains the same payload on ``presence/{i}`` before the run, outside the measured window.

The figure must be the broker's, not the load generator's: two worker processes share the two
cores with the broker, so each worker is lean (an ``asyncio.Protocol`` per client, the packets
encoded before the start, ``concurrency`` connects in flight per worker), all workers start on
one signal from the parent, and the window runs from that signal to the last worker's last
connect. The result gives the broker's CPU and the generator's over the window: when the
generator's is near a core per worker, it bounded the figure (``generator_cpu_s``).

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
  Linux, nothing to configure).

Two kernel costs used to bound this scenario instead of the broker (Mosquitto fell from 10,385
to 1,951 connects/s between two ``make bench`` runs, with nothing changed in it): a client that
``bind``\\s its source address with port 0 gets its port at ``bind`` time, from a search of every
port of that address that is bound or in TIME_WAIT, and the clients of the earlier steps had
left tens of thousands in TIME_WAIT there (the client closed first). Here the port is chosen at
``connect`` instead (``IP_BIND_ADDRESS_NO_PORT``: only the 4-tuple must be unique, and every
broker of a run listens on a port of its own), and the clients close with an RST at the end
(``SO_LINGER`` 0), leaving nothing in TIME_WAIT for the next step or the next run. And with
the retained presence in each connect, Mosquitto runs with Nagle off, as the project's broker
does (``_MosquittoNoDelay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import multiprocessing
import os
import resource
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from bench import eventloop
from bench.brokers import BrokerUnderTest, Mosquitto, SubprocessBroker, close_quietly
from bench.hubbub import HubbubBroker
from bench.mqtt_wire import (
    CONNACK,
    PUBLISH,
    SUBACK,
    SUBACK_FAILURE,
    ConnectRefusedError,
    MqttConnection,
    MqttProtocolError,
    Packet,
    PacketDecoder,
    encode_connect,
    encode_subscribe,
    parse_connack,
    parse_suback,
)
from bench.quiet import machine_busy_s
from bench.relay import RelayError, client_specs
from hubbub import topics
from hubbub.events import presence_payload

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnProcess

__all__ = [
    "CLIENTS_PER_SOURCE",
    "ConnectionsResult",
    "fd_capacity",
    "raise_fd_limit",
    "run_connections",
    "source_hosts",
]

SETTLE_S = 3.0  # after the last connection: let deferred work (presence, GC) finish before measuring
CLIENTS_PER_SOURCE = 5_000  # per loopback source address, well inside its ephemeral ports
CONNECT_TIMEOUT_S = 30.0  # one client's whole handshake
_FD_SLACK = 1_000  # the broker's own files, sockets and database beside its clients
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux >= 4.2
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, no TIME_WAIT
_SUBSCRIBE_ID = 1
_RETAIN = 0x01  # PUBLISH fixed-header flag


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
    """One broker's connect run: rate, memory, and who spent the CPU of the window."""

    broker: str
    connections: int
    connected: int
    connect_seconds: float
    rss_before: int
    rss_after: int
    asked: int = 0  # connections asked for, when the file-descriptor limit allowed fewer (``connections``)
    fd_limit: int = 0  # the soft RLIMIT_NOFILE the run had (broker and workers inherit it)
    broker_cpu_s: float = 0.0  # the broker's user + system CPU over the connect window
    generator_cpu_s: float = 0.0  # the workers' together, over the same window
    machine_busy_s: float = 0.0  # every core's busy time over the window: the rest is other load

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
        """Connects (CONNECT, SUBSCRIBE, retained presence received) completed per second."""
        return self.connected / self.connect_seconds if self.connect_seconds > 0 else 0.0

    @property
    def other_load(self) -> float:
        """The share of the machine's cores busy with neither the broker nor the generator."""
        cores = os.cpu_count() or 1
        other = self.machine_busy_s - self.broker_cpu_s - self.generator_cpu_s
        return max(0.0, other) / (cores * self.connect_seconds) if self.connect_seconds > 0 else 0.0

    @property
    def broker_us_per_connect(self) -> float:
        """The broker's CPU per connect, in microseconds."""
        return self.broker_cpu_s / max(1, self.connected) * 1e6

    @property
    def generator_us_per_connect(self) -> float:
        """The load generator's CPU per connect, in microseconds (both workers)."""
        return self.generator_cpu_s / max(1, self.connected) * 1e6


@dataclass(frozen=True, slots=True)
class _Plan:
    """One client's handshake, encoded before the start: what it sends, and from which address."""

    connect: bytes
    subscribe: bytes
    source: str | None


class _Device(asyncio.Protocol):
    """One client: CONNECT, then SUBSCRIBE on CONNACK; ``done`` once SUBACK and the retained message came."""

    def __init__(self, plan: _Plan, done: asyncio.Future[None]) -> None:
        self._plan = plan
        self._done = done
        self._decoder = PacketDecoder()
        self._transport: asyncio.Transport | None = None
        self._subacked = False
        self._retained = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send CONNECT at once."""
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass of it
        self._transport.write(self._plan.connect)

    def data_received(self, data: bytes) -> None:
        """CONNACK: subscribe; SUBACK and the retained PUBLISH: done. Anything wrong fails ``done``."""
        try:
            for packet in self._decoder.feed(data):
                self._received(packet)
        except (MqttProtocolError, ConnectRefusedError) as exc:
            self._fail(exc)
            return
        if self._subacked and self._retained and not self._done.done():
            self._done.set_result(None)

    def _received(self, packet: Packet) -> None:
        if packet.ptype == CONNACK:
            code = parse_connack(packet.body)[1]
            if code:
                raise ConnectRefusedError(code)
            assert self._transport is not None  # noqa: S101 - set in connection_made
            self._transport.write(self._plan.subscribe)
        elif packet.ptype == SUBACK:
            if SUBACK_FAILURE in parse_suback(packet.body)[1]:
                raise MqttProtocolError("a subscription was refused")
            self._subacked = True
        elif packet.ptype == PUBLISH and packet.flags & _RETAIN:
            self._retained = True

    def connection_lost(self, exc: Exception | None) -> None:
        """The broker closed the connection before the handshake was done."""
        self._fail(exc or ConnectionResetError("the broker closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)


def _client_socket(source: str | None) -> socket.socket:
    """A non-blocking TCP socket that resets on close, bound to ``source`` with its port left to connect."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)  # noqa: FBT003 - the socket API
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        if source is not None:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
    except OSError:
        sock.close()
        raise
    return sock


async def _tcp_connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[str, int]
) -> None:
    """Connect ``sock`` to the numeric ``address``.

    Not ``loop.sock_connect``: uvloop's resolves even a numeric address on its thread pool, a
    thread hand-off per client that cost the generator more than the broker's whole connect.
    """
    code = sock.connect_ex(address)
    if code == errno.EINPROGRESS:
        writable: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()
        loop.add_writer(fd, writable.set_result, None)
        try:
            await writable
        finally:
            loop.remove_writer(fd)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


async def _connect(
    loop: asyncio.AbstractEventLoop, address: tuple[str, int], plan: _Plan
) -> asyncio.BaseTransport:
    """One client's whole handshake; its transport once the retained message arrived."""
    sock = _client_socket(plan.source)
    try:
        await _tcp_connect(loop, sock, address)
    except BaseException:
        sock.close()
        raise
    done: asyncio.Future[None] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Device(plan, done), sock=sock)
    try:
        await done
    except BaseException:
        transport.abort()
        raise
    return transport


async def _connect_all(
    address: tuple[str, int], plans: list[_Plan], concurrency: int
) -> tuple[list[asyncio.BaseTransport], list[str]]:
    """Connect every client of ``plans``, ``concurrency`` at a time; the transports and the errors."""
    loop = asyncio.get_running_loop()
    pending = iter(plans)
    held: list[asyncio.BaseTransport] = []
    errors: list[str] = []

    async def lane() -> None:
        for plan in pending:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    held.append(await _connect(loop, address, plan))
            except (OSError, MqttProtocolError, ConnectRefusedError, TimeoutError) as exc:
                errors.append(repr(exc))

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return held, errors


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _hold(address: tuple[str, int], plans: list[_Plan], pipe: Connection, concurrency: int) -> None:
    cpu = _cpu_s()
    held, errors = await _connect_all(address, plans, concurrency)
    pipe.send(("ready", len(held), time.monotonic(), _cpu_s() - cpu, errors[0] if errors else ""))
    try:
        await asyncio.to_thread(pipe.poll, 600)
    finally:
        for transport in held:
            transport.close()  # SO_LINGER 0: an RST, nothing left in TIME_WAIT


def _worker(address: tuple[str, int], plans: list[_Plan], pipe: Connection, concurrency: int) -> None:
    try:
        eventloop.run(asyncio.sleep(0))  # imports and warms the event loop before the clock starts
        gc.disable()  # a short-lived process holding thousands of clients: collections would be its top cost
        pipe.send(("armed",))
        if pipe.recv() == "go":  # all workers start together; the parent times from this signal
            eventloop.run(_hold(address, plans, pipe, concurrency))
    finally:
        pipe.close()


class _MosquittoNoDelay(Mosquitto):
    """Mosquitto with ``set_tcp_nodelay true``: Nagle off on its client sockets, as on the project's broker.

    Mosquitto answers a SUBSCRIBE with its SUBACK and the retained message in two writes. With
    Nagle on (Mosquitto's default; asyncio and uvloop turn it off on every TCP socket, so the
    project's broker runs without it) the second waits for the client's delayed ACK of the
    first, up to 40 ms: Mosquitto measured 1,800-1,900 connects/s that way, against 3,300-5,700
    with it off, in the same minutes on this shared machine.
    """

    def command(self, workdir: Path, port: int) -> list[str]:
        """Mosquitto's command, its config with ``set_tcp_nodelay true`` added."""
        argv = super().command(workdir, port)
        conf = workdir / "mosquitto.conf"
        conf.write_text(conf.read_text() + "set_tcp_nodelay true\n")
        return argv


def _like_for_like(broker: SubprocessBroker) -> SubprocessBroker:
    """``broker``, or for Mosquitto the same broker with Nagle off (``_MosquittoNoDelay``)."""
    return _MosquittoNoDelay() if type(broker) is Mosquitto else broker


def _retained_topic(broker: BrokerUnderTest, index: int) -> tuple[str, bool]:
    """The presence topic client ``index`` subscribes to, and whether the harness must retain it first."""
    if isinstance(broker, HubbubBroker):
        return topics.presence(index + 1), False  # the broker retains it when the device connects
    return f"presence/{index}", True


async def _retain(broker: BrokerUnderTest, host: str, port: int, retained: list[str]) -> None:
    """Retain a presence payload on each topic of ``retained`` (outside the measured window)."""
    login = broker.publisher_credentials(0)
    conn = await MqttConnection.open(
        host, port, client_id=login.client_id, username=login.username, password=login.password
    )
    try:
        for index, topic in enumerate(retained):
            conn.publish(topic, presence_payload(index + 1, online=True, last_active_ms=0), retain=True)
        await conn.subscribe([(retained[-1], 0)])  # answered once every publish before it was handled
    finally:
        await conn.disconnect()


def _plans(broker: SubprocessBroker, host: str, port: int, count: int) -> list[_Plan]:
    specs, _ = client_specs(broker, count)
    plans, to_retain = [], []
    for spec, source in zip(specs, source_hosts(host, count), strict=True):
        presence, seed = _retained_topic(broker, spec.index)
        if seed:
            to_retain.append(presence)
        connect = encode_connect(
            spec.client_id, username=spec.username, password=spec.password, keepalive=600
        )
        subscribe = encode_subscribe(_SUBSCRIBE_ID, [(spec.topic, 1), (presence, 0)])
        plans.append(_Plan(connect, subscribe, source))
    if to_retain:
        asyncio.run(_retain(broker, host, port, to_retain))
    return plans


def _start_workers(
    address: tuple[str, int],
    plans: list[_Plan],
    *,
    workers: int,
    concurrency: int,
    procs: list[SpawnProcess],
    pipes: list[Connection],
) -> None:
    """Start ``workers`` processes (into ``procs`` and ``pipes``); return once each is ready for "go"."""
    ctx = multiprocessing.get_context("spawn")
    for w in range(workers):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(address, plans[w::workers], child, concurrency // workers))
        proc.daemon = True
        proc.start()
        child.close()
        procs.append(proc)
        pipes.append(parent)
        if not parent.poll(120) or parent.recv() != ("armed",):
            raise RelayError("a connections worker never started")


def _report(pipe: Connection) -> tuple[str, int, float, float, str]:
    """A worker's ("ready", connected, finished at, its CPU seconds, first error)."""
    try:
        if not pipe.poll(300):
            raise RelayError("a connections worker never reported")
        report: tuple[str, int, float, float, str] = pipe.recv()
    except (EOFError, OSError) as exc:
        raise RelayError("a connections worker died") from exc
    return report


def run_connections(
    broker: SubprocessBroker, count: int, workers: int = 2, concurrency: int = 100
) -> ConnectionsResult:
    """Start ``broker``, connect ``count`` devices, measure its connect rate, CPU and RSS growth.

    When the file-descriptor limit cannot be raised far enough, as many as it allows are
    measured and the result says so (``limit_note``).
    """
    broker = _like_for_like(broker)
    procs: list[SpawnProcess] = []
    pipes: list[Connection] = []
    asked = count
    try:
        fd_limit = raise_fd_limit(count)  # before the broker starts: it inherits the limit
        count = min(count, fd_capacity())
        host, port = broker.start()
        plans = _plans(broker, host, port, count)
        _start_workers(
            (host, port), plans, workers=workers, concurrency=concurrency, procs=procs, pipes=pipes
        )
        time.sleep(1.0)
        before = broker.rss_bytes() or 0
        cpu_before = broker.cpu_seconds() or 0.0
        busy_before = machine_busy_s()
        started = time.monotonic()
        for pipe in pipes:
            pipe.send("go")
        ready = [_report(pipe) for pipe in pipes]
        broker_cpu = (broker.cpu_seconds() or 0.0) - cpu_before
        busy = machine_busy_s() - busy_before
        first_error = next((r[4] for r in ready if r[4]), "")
        if first_error:
            sys.stderr.write(f"[{broker.name} connections] some failed: {first_error}\n")
        time.sleep(SETTLE_S)
        after = broker.rss_bytes() or 0
        result = ConnectionsResult(
            broker.name,
            count,
            sum(r[1] for r in ready),
            max(r[2] for r in ready) - started,
            before,
            after,
            asked=asked,
            fd_limit=fd_limit,
            broker_cpu_s=broker_cpu,
            generator_cpu_s=sum(r[3] for r in ready),
            machine_busy_s=busy,
        )
        sys.stderr.write(
            f"[{broker.name} connections] {result.connected:,} connected in {result.connect_seconds:.2f} s"
            f" ({result.connect_rate:,.0f}/s), {result.bytes_per_connection / 1024:.1f} KB each; CPU per"
            f" connect: broker {result.broker_us_per_connect:.0f} µs,"
            f" generator {result.generator_us_per_connect:.0f} µs; other load {result.other_load:.0%} of the"
            " machine\n"
        )
        if result.limit_note:
            sys.stderr.write(f"[{broker.name} connections] {result.limit_note}\n")
        return result
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
        close_quietly(broker)
