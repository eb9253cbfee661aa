"""Load-generator worker process: many MQTT connections on one asyncio loop.

Why processes: one Python loop cannot decode tens of thousands of messages a second and also
keep 10,000 sockets alive, so the scenario spreads subscribers over a few OS processes (2 by
default on a 2-core machine). Processes share only a few int64 counters (received per worker,
sent, publisher done) so the publisher can keep a fixed window of messages in flight without
a message per message between processes. Latency is ``time.time_ns()`` at receive minus the
``time.time_ns()`` the publisher wrote into the payload: the wall clock is the one clock all
processes on a machine share (``monotonic_ns`` is too, on Linux, but is not promised to be).
"""

from __future__ import annotations

import asyncio
import ctypes
import struct
import sys
import time
import traceback
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench import eventloop
from bench.mqtt_wire import (
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK_FAILURE,
    ConnectionClosedError,
    ConnectRefusedError,
    MqttConnection,
    MqttProtocolError,
    Packet,
    publish_payload_offset,
    publish_prefix,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

Counters = ctypes.Array[ctypes.c_int64]

STAMP = struct.Struct(">qq")  # send time (ns since the epoch), sequence number
NS = 1_000_000_000
MAX_SAMPLES = 4_000_000  # per worker: bounds memory if a run is configured very long
CLIENT_ERRORS = (OSError, TimeoutError, MqttProtocolError, ConnectRefusedError, ConnectionClosedError)


@dataclass(frozen=True)
class ClientSpec:
    """One benchmark client: its CONNECT fields and the exact topic it subscribes to."""

    index: int
    client_id: str
    username: str | None
    password: str | None
    topic: str


@dataclass(frozen=True)
class LoadParams:
    """Knobs of one run; every phase has a time bound."""

    duration: float = 10.0  # publishing time, seconds
    warmup: float = 2.0  # first part of ``duration`` not measured
    window: int = 500  # messages published but not yet received
    payload_size: int = 64  # bytes, at least STAMP.size
    qos: int = 0
    workers: int = 2
    connect_concurrency: int = 100  # simultaneous handshakes, all workers together
    connect_timeout: float = 15.0  # one CONNECT+SUBSCRIBE
    connect_deadline: float = 240.0  # the whole ramp-up
    keepalive: int = 120
    drain: float = 5.0  # wait for in-flight messages after publishing stops
    max_messages: int = 20_000_000
    stall_timeout: float = 5.0  # no receive progress for this long: count the window as lost
    poll: float = 0.0005  # publisher's wait when the window is full


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process does: its share of subscribers and maybe the publisher."""

    worker_index: int
    host: str
    port: int
    subscribers: list[ClientSpec]
    publisher: ClientSpec | None
    params: LoadParams


@dataclass
class WorkerReport:
    """What a worker sends back to the scenario at the end (pickled over a pipe)."""

    connected: int = 0
    failed: list[int] = field(default_factory=list)
    first_error: str = ""
    connect_seconds: float = 0.0
    received_window: int = 0
    received_total: int = 0
    latencies_us: bytes = b""
    sent: int = 0
    presumed_lost: int = 0
    stalls: int = 0
    cpu_seconds: float = 0.0  # this process's CPU time inside the measured window
    acked: int = 0


class _Receiver:
    """Per-process receive statistics, shared by all reader tasks of the process."""

    def __init__(self, slot: int, counters: Counters, qos: int) -> None:
        self.slot, self.counters, self.qos = slot, counters, qos
        self.window_start = self.window_end = 1 << 62  # nothing is measured before "go"
        self.received_window = 0
        self.received_total = 0
        self.acked = 0
        self.pongs = 0
        self.latencies = array("q")

    async def read_loop(self, conn: MqttConnection) -> None:
        """Consume one connection until EOF or cancellation (the worker's deadline bounds it)."""
        try:
            for _ in range(1 << 62):
                self.consume(conn, await conn.read_packets(), time.time_ns())
        except (*CLIENT_ERRORS, asyncio.IncompleteReadError):
            return

    def consume(self, conn: MqttConnection, packets: list[Packet], now: int) -> None:
        """Account for one read's packets; ``now`` is their common receive time."""
        count = 0
        for pkt in packets:
            if pkt.ptype == PUBLISH:
                count += 1
                start = publish_payload_offset(pkt.flags, pkt.body)
                if self.window_start <= now < self.window_end:
                    self.received_window += 1
                    if len(self.latencies) < MAX_SAMPLES:
                        self.latencies.append((now - STAMP.unpack_from(pkt.body, start)[0]) // 1000)
                if pkt.flags & 0x06:  # QoS 1: the packet id sits just before the payload
                    conn.puback(int.from_bytes(pkt.body[start - 2 : start]))
            elif pkt.ptype == PUBACK:
                self.acked += 1
            elif pkt.ptype == PINGRESP:
                self.pongs += 1
        if count:
            self.received_total += count
            self.counters[self.slot] = self.received_total


async def _open(job: WorkerJob, spec: ClientSpec) -> MqttConnection:
    return await MqttConnection.open(
        job.host,
        job.port,
        client_id=spec.client_id,
        username=spec.username,
        password=spec.password,
        keepalive=job.params.keepalive,
    )


async def _connect_all(
    job: WorkerJob, recv: _Receiver, readers: list[asyncio.Task[None]], conns: list[MqttConnection]
) -> WorkerReport:
    """Connect and subscribe every client with bounded concurrency; failures are counted, not fatal."""
    p = job.params
    sem = asyncio.Semaphore(max(1, p.connect_concurrency // p.workers))
    connected: set[int] = set()
    report = WorkerReport()
    step = max(1000, len(job.subscribers) // 10)

    async def one(spec: ClientSpec) -> None:
        async with sem:
            try:
                async with asyncio.timeout(p.connect_timeout):
                    conn = await _open(job, spec)
            except CLIENT_ERRORS as exc:
                report.failed.append(spec.index)
                report.first_error = report.first_error or f"{spec.client_id} connect: {exc!r}"
                return
            try:
                async with asyncio.timeout(p.connect_timeout):
                    codes = await conn.subscribe([(spec.topic, p.qos)])
                if codes[0] == SUBACK_FAILURE:
                    raise MqttProtocolError(f"SUBACK refused {spec.topic!r}")
            except CLIENT_ERRORS as exc:
                conn.close()
                report.failed.append(spec.index)
                report.first_error = report.first_error or f"{spec.client_id} subscribe: {exc!r}"
                return
            conns.append(conn)
            connected.add(spec.index)
            readers.append(asyncio.create_task(recv.read_loop(conn)))
            if len(conns) % step == 0:
                _log(job, f"{len(conns)}/{len(job.subscribers)} subscribed")

    started = time.perf_counter()
    tasks = [asyncio.create_task(one(spec)) for spec in job.subscribers]
    try:
        async with asyncio.timeout(p.connect_deadline):
            await asyncio.gather(*tasks)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report.failed = [s.index for s in job.subscribers if s.index not in connected]
        report.first_error = report.first_error or f"connect deadline {p.connect_deadline} s passed"
    report.connect_seconds = time.perf_counter() - started
    report.connected = len(conns)
    return report


async def _publish(
    conn: MqttConnection,
    topics: list[str],
    job: WorkerJob,
    start_ns: int,
    counters: Counters,
    *,
    report: WorkerReport,
) -> None:
    """Publish round-robin to ``topics`` from ``start_ns`` for ``duration``, keeping ``window`` in flight.

    In flight = sent - received (all workers) - presumed lost. QoS 0 may be dropped by a broker;
    when nothing arrives for ``stall_timeout`` the whole window is written off so the run goes on.
    """
    p = job.params
    prefixes = [publish_prefix(t, p.payload_size, p.qos) for t in topics]
    pad = bytes(p.payload_size - STAMP.size)
    n_topics, sent_slot, workers = len(prefixes), p.workers, p.workers
    await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / NS))
    end_ns = start_ns + int(p.duration * NS)
    sent = lost = 0
    last_received, last_progress = -1, time.time_ns()
    while (now := time.time_ns()) < end_ns and sent < p.max_messages:
        received = sum(counters[:workers])
        room = min(p.window, p.window - (sent - received - lost))  # late "lost" ones must not widen it
        if room > 0:
            count = min(room, p.max_messages - sent)
            if p.qos:
                batch = [
                    prefixes[s % n_topics] + (s % 0xFFFF + 1).to_bytes(2) + STAMP.pack(now, s) + pad
                    for s in range(sent, sent + count)
                ]
            else:
                batch = [prefixes[s % n_topics] + STAMP.pack(now, s) + pad for s in range(sent, sent + count)]
            conn.writer.write(b"".join(batch))
            sent += count
            counters[sent_slot] = sent
            await conn.writer.drain()
            await asyncio.sleep(0)
            continue
        if received != last_received:
            last_received, last_progress = received, now
        elif now - last_progress > p.stall_timeout * NS:
            lost, report.stalls, last_progress = sent - received, report.stalls + 1, now
        await asyncio.sleep(p.poll)
    report.sent, report.presumed_lost = sent, lost


async def _drain(job: WorkerJob, counters: Counters) -> None:
    """Wait (bounded) until the publisher is done and every sent message has arrived somewhere."""
    p = job.params
    for _ in range(int(p.drain / 0.02) + 1):
        if counters[p.workers + 1] and sum(counters[: p.workers]) >= counters[p.workers]:
            return
        await asyncio.sleep(0.02)


async def _cpu_probe(start_ns: int, end_ns: int, report: WorkerReport) -> None:
    """Record this process's CPU time over the measured window.

    Near 100 % per worker means the generator, not the broker, limits the rate.
    """
    await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / NS))
    before = time.process_time()
    await asyncio.sleep(max(0.0, (end_ns - time.time_ns()) / NS))
    report.cpu_seconds = time.process_time() - before


async def _pinger(conns: list[MqttConnection], keepalive: int, restart: asyncio.Event) -> None:
    """PINGREQ every half keepalive: subscribers only read, and brokers drop silent clients.

    ``restart`` means "everyone was just pinged": the interval starts over without a ping, so
    a burst of 10,000 PINGREQs does not land inside the measured window.
    """
    for _ in range(10_000):
        try:
            async with asyncio.timeout(keepalive / 2):
                await restart.wait()
        except TimeoutError:
            for conn in conns:
                if not conn.writer.is_closing():
                    conn.ping()
        else:
            restart.clear()


async def _ping_all(conns: list[MqttConnection], recv: _Receiver, limit: float) -> None:
    """Ping every connection and wait (at most ``limit`` s) until the broker has answered all.

    Done just before reporting ready, so keepalive traffic is handled before measuring starts.
    """
    expected = recv.pongs + sum(not c.writer.is_closing() for c in conns)
    for conn in conns:
        if not conn.writer.is_closing():
            conn.ping()
    for _ in range(int(limit / 0.01) + 1):
        if recv.pongs >= expected:
            return
        await asyncio.sleep(0.01)


def _log(job: WorkerJob, text: str) -> None:
    sys.stderr.write(f"  [worker {job.worker_index}] {text}\n")


async def _recv_pipe(pipe: Connection) -> object:
    """Wait for the scenario's next message without blocking the loop (readers keep running).

    Polls in short slices so a cancelled worker never leaves a long-blocked executor thread;
    the caller bounds the total wait with ``asyncio.timeout``.
    """
    for _ in range(1 << 20):
        if await asyncio.to_thread(pipe.poll, 0.25):
            return pipe.recv()
    raise TimeoutError("no message from the scenario process")


async def _run(job: WorkerJob, pipe: Connection, counters: Counters) -> None:
    p = job.params
    recv = _Receiver(job.worker_index, counters, p.qos)
    readers: list[asyncio.Task[None]] = []
    conns: list[MqttConnection] = []
    try:
        # Pings start with the ramp-up: a 10,000-client ramp can outlast the keepalive.
        restart = asyncio.Event()
        readers.append(asyncio.create_task(_pinger(conns, p.keepalive, restart)))
        report = await _connect_all(job, recv, readers, conns)
        pub: MqttConnection | None = None
        if job.publisher is not None:
            async with asyncio.timeout(p.connect_timeout):
                pub = await _open(job, job.publisher)
            conns.append(pub)
            readers.append(asyncio.create_task(recv.read_loop(pub)))
        await _ping_all(conns, recv, p.connect_timeout)
        restart.set()
        pipe.send(("ready", report))
        async with asyncio.timeout(p.connect_deadline + 120):
            message = await _recv_pipe(pipe)
        if not (isinstance(message, tuple) and message[0] == "go"):
            return
        _, start_ns, topics = message
        recv.window_start = start_ns + int(p.warmup * NS)
        recv.window_end = start_ns + int(p.duration * NS)
        probe = asyncio.create_task(_cpu_probe(recv.window_start, recv.window_end, report))
        readers.append(probe)
        if pub is not None:
            await _publish(pub, topics, job, start_ns, counters, report=report)
            counters[p.workers + 1] = 1
        else:
            await asyncio.sleep(max(0.0, (recv.window_end - time.time_ns()) / NS))
        await asyncio.wait([probe], timeout=p.duration)
        await _drain(job, counters)
        report.received_window, report.received_total = recv.received_window, recv.received_total
        report.latencies_us, report.acked = recv.latencies.tobytes(), recv.acked
        pipe.send(("result", report))
    finally:
        await asyncio.gather(*(c.disconnect() for c in conns), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


def worker_main(job: WorkerJob, pipe: Connection, counters: Counters) -> None:
    """Process entry point; any failure goes back to the scenario as ("error", traceback)."""
    p = job.params
    hard_limit = p.connect_deadline + p.duration + p.drain + 240

    async def bounded() -> None:
        async with asyncio.timeout(hard_limit):
            await _run(job, pipe, counters)

    try:
        eventloop.run(bounded())
    except Exception:  # noqa: BLE001 - report whatever went wrong to the parent instead of dying silently
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()
