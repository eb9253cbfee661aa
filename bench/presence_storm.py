"""The "presence" scenario: N devices drop and reconnect at once; what presence publishes.

N is ``CLIENTS`` (2,000) in ``make bench``; the reconnect storm of issue #15 is
``python -m bench presence --clients 10000`` (or ``run_presence(10_000)``): the file-descriptor
limit is raised for it as in the connections scenario (``bench.connections.raise_fd_limit``).

Why: a network blip drops every phone of a region at once, and they all come back within
seconds. Presence (``broker_plugins/presence.py``) promises that a reconnect within the grace
period publishes nothing and that whatever the churn each user's state is published at most
once per grace period. This scenario checks both on the real broker and measures what the
storm costs it:

- setup: the project's broker with a short grace (``HUBBUB_PRESENCE_GRACE_S``), N devices
  (one per user, minted JWTs as in the connections scenario, each subscribed to its inbox)
  and one service-account observer subscribed to ``presence/+`` that records every presence
  publish (receive time, ``user_id``, ``status``, and the broker's own decision time from
  ``last_active_at``);
- (a) blip: every device socket is reset at once (``SO_LINGER`` 0: an RST, no DISCONNECT) and
  reconnects immediately; expected: no publish until a grace period after the last reconnect;
- (b) outage: every socket is reset, nothing reconnects until the offline publishes are in
  (one grace period), then all reconnect at once; expected: exactly one ``offline`` and one
  ``online`` per user, each ``online`` held until a grace period after that user's ``offline``.

Broker CPU comes from ``/proc/<pid>/stat`` (utime + stime), sampled every 0.1 s; the machine's
busy time from ``/proc/stat``, so load from outside the benchmark shows up as "other".
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import math
import multiprocessing
import os
import socket
import struct
import sys
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import orjson

from bench import eventloop
from bench.brokers import close_quietly
from bench.connections import raise_fd_limit
from bench.hubbub import HubbubBroker
from bench.mqtt_wire import PUBLISH, SUBACK_FAILURE, MqttConnection, parse_publish
from bench.relay import RelayError, client_specs
from hubbub import topics

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from bench.loadgen import ClientSpec

__all__ = [
    "SECTION_TITLE",
    "PresenceResult",
    "insert_section",
    "presence_markdown",
    "run_presence",
]

SECTION_TITLE = "## 5. Presence storm"
CLIENTS = 2_000
GRACE_S = 3.0
KEEPALIVE_S = 600  # longer than the run: no pings needed, no keepalive expiry mid-run
CONNECT_TIMEOUT_S = 30.0  # per handshake (CONNECT + SUBSCRIBE)
COMMAND_TIMEOUT_S = 120.0  # per worker command (connect all, drop all)
SETTLE_S = 1.5  # after the last expected publish: room for any that should not come
PAUSE_S = 0.5  # (b): between the last offline and the reconnect
LATE_S = 10.0  # how long past its due time an expected publish may take before we give up
SAMPLE_S = 0.1  # CPU sampling period
MAX_SAMPLES = 3_000  # 300 s of samples: the sampler stops even if nobody stops it
WORKER_LIFETIME_S = 300.0  # a worker whose parent vanished exits after this
STAMP_TOLERANCE_S = 0.005  # ms stamps on the wall clock vs. the broker's monotonic timers
PRESENCE_FILTER = topics.every_presence()


class PresenceHubbub(HubbubBroker):
    """The project's broker with a short presence grace period, so the run stays short."""

    def __init__(self, grace_s: float) -> None:
        super().__init__()
        self.grace_s = grace_s

    def environment(self, workdir: Path, port: int) -> dict[str, str]:
        """``HubbubBroker``'s environment plus ``HUBBUB_PRESENCE_GRACE_S``."""
        env = super().environment(workdir, port)
        env["HUBBUB_PRESENCE_GRACE_S"] = f"{self.grace_s:g}"
        return env


# --- worker processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectReport:
    """One worker's (re)connect of all its devices."""

    connected: int
    started: float  # wall clock, seconds
    ended: float
    first_error: str


def _reset(conn: MqttConnection) -> None:
    """Close with an RST: no DISCONNECT, no FIN handshake, what a vanished phone looks like."""
    sock = conn.writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.writer.transport.abort()


async def _connect_all(
    host: str, port: int, specs: list[ClientSpec], conns: dict[int, MqttConnection], concurrency: int
) -> ConnectReport:
    sem = asyncio.Semaphore(concurrency)

    async def one(spec: ClientSpec) -> None:
        async with sem, asyncio.timeout(CONNECT_TIMEOUT_S):
            conn = await MqttConnection.open(
                host,
                port,
                client_id=spec.client_id,
                username=spec.username,
                password=spec.password,
                keepalive=KEEPALIVE_S,
            )
            try:
                codes = await conn.subscribe([(spec.topic, 1)])
            except BaseException:
                conn.close()
                raise
            if codes[0] == SUBACK_FAILURE:
                conn.close()
                raise RelayError(f"{spec.topic} refused")
            conns[spec.index] = conn

    started = time.time()
    results = await asyncio.gather(*(one(s) for s in specs if s.index not in conns), return_exceptions=True)
    ended = time.time()
    failed = [r for r in results if isinstance(r, BaseException)]
    return ConnectReport(len(conns), started, ended, repr(failed[0]) if failed else "")


def _drop_all(conns: dict[int, MqttConnection]) -> float:
    """Reset every connection in one pass of the loop; the wall time it happened."""
    at = time.time()
    for conn in conns.values():
        _reset(conn)
    conns.clear()
    return at


async def _devices(host: str, port: int, specs: list[ClientSpec], concurrency: int, pipe: Connection) -> None:
    conns: dict[int, MqttConnection] = {}
    deadline = time.monotonic() + WORKER_LIFETIME_S
    try:
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(pipe.poll, 1.0):
                continue
            command = pipe.recv()
            if command == "connect":
                pipe.send(("connected", await _connect_all(host, port, specs, conns, concurrency)))
            elif command == "drop":
                pipe.send(("dropped", _drop_all(conns)))
            elif command == "cycle":  # drop, then reconnect at once: a blip
                dropped = _drop_all(conns)
                await asyncio.sleep(0)  # let the transports actually close before the reconnects
                pipe.send(("cycled", dropped, await _connect_all(host, port, specs, conns, concurrency)))
            else:
                return
    finally:
        for conn in conns.values():
            conn.close()


def _devices_main(host: str, port: int, specs: list[ClientSpec], concurrency: int, pipe: Connection) -> None:
    try:
        eventloop.run(_devices(host, port, specs, concurrency, pipe))
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
        with contextlib.suppress(OSError):
            pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


Record = tuple[float, int, str, float]  # received (wall s), user id, status, broker's decision (wall s)


def _record(payload: bytes, received: float) -> Record:
    event = orjson.loads(payload)
    stamp = event.get("last_active_at")
    decided = dt.datetime.fromisoformat(stamp).timestamp() if stamp else float("nan")
    return received, int(event["user_id"]), str(event["status"]), decided


async def _read_presence(conn: MqttConnection, records: list[Record]) -> None:
    """Record every PUBLISH (acknowledged at once) until the connection ends."""
    while True:
        packets = await conn.read_packets()
        received = time.time()
        for packet in packets:
            if packet.ptype != PUBLISH:
                continue
            publish = parse_publish(packet.flags, packet.body)
            if publish.packet_id is not None:
                conn.puback(publish.packet_id)
            records.append(_record(publish.payload, received))


async def _observe(host: str, port: int, spec: ClientSpec, pipe: Connection) -> None:
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        conn = await MqttConnection.open(
            host,
            port,
            client_id=spec.client_id,
            username=spec.username,
            password=spec.password,
            keepalive=KEEPALIVE_S,
        )
        codes = await conn.subscribe([(PRESENCE_FILTER, 1)])
    if codes[0] == SUBACK_FAILURE:
        raise RelayError(f"the service account may not subscribe to {PRESENCE_FILTER}")
    records: list[Record] = []
    reader = asyncio.create_task(_read_presence(conn, records))
    pipe.send(("ready",))
    deadline = time.monotonic() + WORKER_LIFETIME_S
    try:
        while time.monotonic() < deadline:
            if reader.done():
                reader.result()  # raises what ended it
                raise RelayError("observer's connection ended")
            if not await asyncio.to_thread(pipe.poll, 0.2):
                continue
            if pipe.recv() == "count":
                pipe.send(("count", len(records)))
            else:
                pipe.send(("records", records))
                return
    finally:
        reader.cancel()
        await conn.disconnect()


def _observer_main(host: str, port: int, spec: ClientSpec, pipe: Connection) -> None:
    try:
        eventloop.run(_observe(host, port, spec, pipe))
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
        with contextlib.suppress(OSError):
            pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


# --- CPU sampling ----------------------------------------------------------------------------


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (utime + stime) of ``pid`` in seconds, NaN once it is gone."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) seconds of all CPUs, from the first line of /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


@dataclass(frozen=True)
class Sample:
    """Cumulative CPU seconds at one wall-clock instant."""

    at: float
    broker: float
    generator: float  # device workers + observer + this process
    machine_busy: float
    machine_total: float


class CpuSampler:
    """Samples broker, generator and machine CPU every ``SAMPLE_S`` in a daemon thread."""

    def __init__(self, broker_pid: int | None, generator_pids: list[int]) -> None:
        self._broker = broker_pid
        self._generator = [*generator_pids, os.getpid()]
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def sample(self) -> Sample:
        """One sample now."""
        busy, total = _machine_busy()
        generator = sum(c for c in map(_process_cpu, self._generator) if not math.isnan(c))
        return Sample(time.time(), _process_cpu(self._broker), generator, busy, total)

    def _run(self) -> None:
        for _ in range(MAX_SAMPLES):
            self.samples.append(self.sample())
            if self._stop.wait(SAMPLE_S):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _at(self, when: float) -> Sample:
        times = [s.at for s in self.samples]
        k = min(max(bisect.bisect_left(times, when), 0), len(self.samples) - 1)
        return self.samples[k]

    def window(self, start: float, end: float) -> Cpu:
        """CPU % (of one core) between the samples nearest ``start`` and ``end``."""
        if not self.samples:
            return Cpu()
        a, b = self._at(start), self._at(end)
        seconds = b.at - a.at
        if seconds <= 0:
            return Cpu()
        cores = os.cpu_count() or 1
        total = b.machine_total - a.machine_total
        machine = 100 * (b.machine_busy - a.machine_busy) / total if total > 0 else float("nan")
        return Cpu(
            broker=100 * (b.broker - a.broker) / seconds,
            generator=100 * (b.generator - a.generator) / seconds,
            machine=machine * cores,
        )

    def peak_broker(self, start: float, end: float, width: float = 1.0) -> float:
        """The broker's highest CPU % over any ``width``-second stretch of samples in [start, end]."""
        inside = [s for s in self.samples if start <= s.at <= end]
        best = float("nan")
        j = 0
        for i, first in enumerate(inside):
            j = max(j, i)
            while j < len(inside) - 1 and inside[j].at - first.at < width:
                j += 1
            seconds = inside[j].at - first.at
            if seconds >= width * 0.9:
                pct = 100 * (inside[j].broker - first.broker) / seconds
                best = pct if math.isnan(best) or pct > best else best
        return best


@dataclass(frozen=True)
class Cpu:
    """CPU % of one core: broker process, load generator, whole machine (so 200 % = 2 cores)."""

    broker: float = float("nan")
    generator: float = float("nan")
    machine: float = float("nan")

    @property
    def other(self) -> float:
        """Busy time outside the broker and the generator: other load, or the kernel's loopback work.

        Clamped at 0: a little below is the 10 ms tick of the counters, not negative load.
        """
        other = self.machine - self.broker - self.generator
        return other if math.isnan(other) else max(0.0, other)


# --- results ---------------------------------------------------------------------------------


@dataclass
class Phase:
    """One phase: what reconnected, what was published, what it cost."""

    name: str
    start: float
    end: float
    reconnected: int = 0
    reconnect_seconds: float = float("nan")
    offline: int = 0
    online: int = 0
    users: int = 0  # distinct users with a publish in the phase
    peak_per_s: float = 0.0  # most publishes received in any 1 s
    reconnect_cpu: Cpu = field(default_factory=Cpu)  # during the reconnect burst
    phase_cpu: Cpu = field(default_factory=Cpu)  # drop to end of the phase
    peak_broker_cpu: float = float("nan")  # any 1 s in the phase
    first_error: str = ""

    @property
    def published(self) -> int:
        """Presence publishes received in the phase."""
        return self.offline + self.online

    @property
    def reconnect_rate(self) -> float:
        """Devices reconnected (CONNECT + SUBSCRIBE) per second."""
        secs = self.reconnect_seconds
        return self.reconnected / secs if secs > 0 else float("nan")


@dataclass
class PresenceResult:
    """The whole run."""

    clients: int
    grace_s: float
    concurrency: int
    connected: int
    connect_seconds: float
    phases: list[Phase]
    total_published: int
    initial_online: int  # publishes before (a): every user's first ``online``
    max_per_user_per_grace: int  # by the broker's own decision times
    violators: int  # users published more than once within a grace period
    min_gap_s: float  # shortest interval between two publishes of one user
    users_expected_b: int  # users with exactly one offline then one online in phase (b)
    offline_to_online_s: list[float]  # (b): each such user's online minus offline decision time, sorted
    started_at: float = field(default_factory=time.time)

    @property
    def held(self) -> bool:
        """The property of the issue: no user published twice within a grace period."""
        return self.max_per_user_per_grace <= 1


def _peak_per_s(times: list[float]) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] - t < 1.0:
            j += 1
        best = max(best, j - i)
    return best


def _per_user(records: list[Record], grace_s: float) -> tuple[int, int, float]:
    """(most publishes of one user within any grace period, users with more than one, shortest gap).

    By the broker's decision times (``last_active_at``, ms): a window is ``grace_s`` minus
    ``STAMP_TOLERANCE_S`` for the ms rounding of two stamps and wall clock vs. monotonic timers.
    """
    stamps: dict[int, list[float]] = defaultdict(list)
    for _, user, _, decided in records:
        stamps[user].append(decided)
    worst, violators, gap = 0, 0, float("inf")
    window = grace_s - STAMP_TOLERANCE_S
    for times in stamps.values():
        times.sort()
        most, j = 0, 0
        for i, t in enumerate(times):
            j = max(j, i)
            while j < len(times) and times[j] - t < window:
                j += 1
            most = max(most, j - i)
            if i:
                gap = min(gap, t - times[i - 1])
        worst = max(worst, most)
        violators += most > 1
    return worst, violators, gap


def _fill(phase: Phase, records: list[Record], sampler: CpuSampler) -> None:
    inside = sorted(r for r in records if phase.start <= r[0] < phase.end)
    phase.offline = sum(1 for r in inside if r[2] == "offline")
    phase.online = sum(1 for r in inside if r[2] == "online")
    phase.users = len({r[1] for r in inside})
    phase.peak_per_s = _peak_per_s([r[0] for r in inside])
    phase.phase_cpu = sampler.window(phase.start, phase.end)
    phase.peak_broker_cpu = sampler.peak_broker(phase.start, phase.end)


def _expected_b(records: list[Record], phase: Phase) -> tuple[int, list[float]]:
    """Users with exactly ``offline`` then ``online`` in ``phase``, and each one's gap between the two."""
    by_user: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for received, user, status, decided in sorted(records):
        if phase.start <= received < phase.end:
            by_user[user].append((status, decided))
    gaps = [
        seen[1][1] - seen[0][1]
        for seen in by_user.values()
        if [status for status, _ in seen] == ["offline", "online"]
    ]
    return len(gaps), sorted(gaps)


# --- the run ---------------------------------------------------------------------------------


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _reply(pipe: Connection, kind: str, timeout: float) -> tuple[object, ...]:
    if not pipe.poll(timeout):
        raise RelayError(f"no {kind!r} from a worker within {timeout:.0f} s")
    try:
        message: tuple[object, ...] = pipe.recv()
    except (EOFError, OSError) as exc:
        raise RelayError(f"worker died before {kind!r}") from exc
    if message[0] == "error":
        raise RelayError(f"worker failed:\n{message[1]}")
    if message[0] != kind:
        raise RelayError(f"worker sent {message[0]!r}, expected {kind!r}")
    return message


def _command(pipes: list[Connection], command: str, kind: str) -> list[tuple[object, ...]]:
    for pipe in pipes:
        pipe.send(command)
    return [_reply(pipe, kind, COMMAND_TIMEOUT_S) for pipe in pipes]


def _report(value: object) -> ConnectReport:
    if not isinstance(value, ConnectReport):
        raise RelayError(f"expected a connect report, got {value!r}")
    return value


def _number(value: object) -> float:
    if not isinstance(value, (int, float)):
        raise RelayError(f"expected a number, got {value!r}")
    return float(value)


def _merge(reports: list[ConnectReport]) -> ConnectReport:
    return ConnectReport(
        sum(r.connected for r in reports),
        min(r.started for r in reports),
        max(r.ended for r in reports),
        next((r.first_error for r in reports if r.first_error), ""),
    )


class _Observer:
    """The parent's side of the observer process."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe

    def count(self) -> int:
        """Presence publishes seen so far."""
        self.pipe.send("count")
        return int(_number(_reply(self.pipe, "count", 10)[1]))

    def wait_for(self, count: int, deadline: float) -> int:
        """Poll until ``count`` publishes are in or the wall clock passes ``deadline``."""
        seen = self.count()
        while seen < count and time.time() < deadline:
            time.sleep(0.1)
            seen = self.count()
        return seen

    def records(self) -> list[Record]:
        """All of them; the observer stops."""
        self.pipe.send("stop")
        records = _reply(self.pipe, "records", 30)[1]
        assert isinstance(records, list)  # noqa: S101 - narrowing for mypy
        return records


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


class _Run:
    """The child processes of one run and the steps of its phases."""

    def __init__(self, broker: PresenceHubbub, clients: int, workers: int, concurrency: int) -> None:
        self.broker = broker
        self.clients = clients
        self.grace_s = broker.grace_s
        self.procs: list[BaseProcess] = []
        self.pipes: list[Connection] = []
        self.observer_pipe: Connection | None = None
        host, port = broker.start()
        specs, service = client_specs(broker, clients)
        self.observer = _Observer(self._spawn(_observer_main, (host, port, service)))
        self.observer_pipe = self.observer.pipe
        _reply(self.observer.pipe, "ready", CONNECT_TIMEOUT_S + 10)
        for w in range(workers):
            self.pipes.append(
                self._spawn(_devices_main, (host, port, specs[w::workers], concurrency // workers))
            )

    def _spawn(self, target: Callable[..., None], args: tuple[object, ...]) -> Connection:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(*args, child), daemon=True)
        proc.start()
        child.close()
        self.procs.append(proc)
        return parent

    @property
    def generator_pids(self) -> list[int]:
        """Device workers and the observer."""
        return [p.pid for p in self.procs if p.pid is not None]

    def connect(self) -> ConnectReport:
        """Every worker (re)connects all its devices."""
        return _merge([_report(r[1]) for r in _command(self.pipes, "connect", "connected")])

    def blip(self, sampler: CpuSampler) -> Phase:
        """(a): drop all, reconnect at once; watch for a grace period after the last reconnect."""
        replies = _command(self.pipes, "cycle", "cycled")
        dropped = min(_number(r[1]) for r in replies)
        again = _merge([_report(r[2]) for r in replies])
        phase = Phase("a: drop + immediate reconnect", dropped, again.ended + self.grace_s + SETTLE_S)
        phase.reconnected, phase.first_error = again.connected, again.first_error
        phase.reconnect_seconds = again.ended - dropped
        _sleep_until(phase.end)
        phase.reconnect_cpu = sampler.window(dropped, again.ended)
        _say(f"[presence] (a) {again.connected:,} reconnected in {phase.reconnect_seconds:.1f} s")
        return phase

    def outage(self, sampler: CpuSampler, start: float) -> Phase:
        """(b): drop all, wait for every offline, reconnect, wait for every online."""
        before = self.observer.count()
        phase = Phase("b: drop, wait out the grace, reconnect", start, 0.0)
        dropped = min(_number(r[1]) for r in _command(self.pipes, "drop", "dropped"))
        self.observer.wait_for(before + self.clients, dropped + self.grace_s + LATE_S)
        time.sleep(PAUSE_S)  # then back at once: each online is due a grace period after the offline
        back = self.connect()
        phase.reconnected, phase.first_error = back.connected, back.first_error
        phase.reconnect_seconds = back.ended - back.started
        phase.reconnect_cpu = sampler.window(back.started, back.ended)
        self.observer.wait_for(before + 2 * self.clients, back.ended + self.grace_s + LATE_S)
        phase.end = time.time() + SETTLE_S
        _sleep_until(phase.end)
        _say(f"[presence] (b) {back.connected:,} reconnected in {phase.reconnect_seconds:.1f} s")
        return phase

    def records(self) -> list[Record]:
        """Everything the observer saw; it exits after."""
        records = self.observer.records()
        self.observer_pipe = None
        return records

    def close(self) -> None:
        """Stop the workers (bounded), then the broker."""
        for pipe in [*self.pipes, *([self.observer_pipe] if self.observer_pipe is not None else [])]:
            with contextlib.suppress(OSError, ValueError):
                pipe.send("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def run_presence(
    clients: int = CLIENTS, grace_s: float = GRACE_S, workers: int = 2, concurrency: int = 100
) -> PresenceResult:
    """Start the broker with ``grace_s``, run the blip (a) and the outage (b), reduce what was seen."""
    if clients < 1 or workers < 1 or concurrency < workers or grace_s <= 0:
        raise ValueError("clients, workers, grace and concurrency (>= workers) must be positive")
    started = time.time()
    raise_fd_limit(clients)  # before the broker starts: it inherits the limit
    broker = PresenceHubbub(grace_s)
    run: _Run | None = None
    try:
        run = _Run(broker, clients, workers, concurrency)
        with CpuSampler(broker.pid, run.generator_pids) as sampler:
            first = run.connect()
            _say(f"[presence] {first.connected:,} devices connected in {first.ended - first.started:.1f} s")
            if first.connected < clients:
                raise RelayError(f"only {first.connected} of {clients} connected: {first.first_error}")
            run.observer.wait_for(clients, time.time() + LATE_S)  # the initial online of every user
            time.sleep(SETTLE_S)
            blip = run.blip(sampler)
            outage = run.outage(sampler, blip.end)
            records = run.records()
    finally:
        if run is not None:
            run.close()
        close_quietly(broker)
    for phase in (blip, outage):
        _fill(phase, records, sampler)
    worst, violators, gap = _per_user(records, grace_s)
    expected_b, gaps_b = _expected_b(records, outage)
    _say(
        f"[presence] {len(records):,} presence publishes; max per user per grace period {worst}"
        f" ({violators:,} users above 1; shortest same-user gap {gap:.3f} s)"
    )
    return PresenceResult(
        clients=clients,
        grace_s=grace_s,
        concurrency=concurrency,
        connected=first.connected,
        connect_seconds=first.ended - first.started,
        phases=[blip, outage],
        total_published=len(records),
        initial_online=sum(1 for r in records if r[0] < blip.start),
        max_per_user_per_grace=worst,
        violators=violators,
        min_gap_s=gap,
        users_expected_b=expected_b,
        offline_to_online_s=gaps_b,
        started_at=started,
    )


# --- report ----------------------------------------------------------------------------------


def _verdict(held: bool) -> str:
    return "held" if held else "VIOLATED"


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f}"


def presence_markdown(
    results: Sequence[PresenceResult], command: str, errors: Sequence[str] = ()
) -> list[str]:
    """Section 5 of docs/benchmarks.md, as lines."""
    lines = [SECTION_TITLE, ""]
    for r in results:
        when = dt.datetime.fromtimestamp(r.started_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines += [
            (
                f"Command: `{command}`, run {when}. The project's broker with "
                f"`HUBBUB_PRESENCE_GRACE_S={r.grace_s:g}`; {r.clients:,} devices (one per user, minted JWTs, "
                "each subscribed to its inbox) and one service account subscribed to `presence/+` counting "
                "presence publishes. A drop resets every device socket at once (RST, no DISCONNECT). "
                f"(a): all reconnect at once ({r.concurrency} handshakes in flight); expected: no publish. "
                "(b): all stay away until their `offline` is published, then reconnect at once; expected: "
                "one `offline` and one `online` per user, each `online` held until a grace period after the "
                "`offline`. CPU % is of one core, from `/proc/<pid>/stat` (utime + stime); other = machine "
                "busy minus broker minus load generator."
            ),
            "",
            (
                "| phase | reconnected | reconnect s | reconnects/s | publishes (offline / online) | "
                "users published | peak publishes/s | broker CPU % reconnect | broker CPU % phase | "
                "peak broker CPU % (1 s) | other CPU % |"
            ),
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {p.name} | {p.reconnected:,} | {p.reconnect_seconds:.1f} | {p.reconnect_rate:,.0f} | "
            f"{p.published:,} ({p.offline:,} / {p.online:,}) | {p.users:,} | {p.peak_per_s:,.0f} | "
            f"{_pct(p.reconnect_cpu.broker)} | {_pct(p.phase_cpu.broker)} | {_pct(p.peak_broker_cpu)} | "
            f"{_pct(p.phase_cpu.other)} |"
            for p in r.phases
        ]
        blip, outage = r.phases[0], r.phases[-1]
        gaps = r.offline_to_online_s
        gap_text = (
            f"min {gaps[0]:.3f} s, median {gaps[len(gaps) // 2]:.3f} s, max {gaps[-1]:.3f} s" if gaps else "—"
        )
        a_text = (
            f"- A reconnect within the grace period publishes nothing: **{_verdict(blip.published == 0)}** "
            f"({blip.published:,} publishes in (a))."
        )
        once_text = (
            f"- At most one change per user per grace period: **{_verdict(r.held)}**. The most publishes "
            f"any user got within {r.grace_s:g} s was {r.max_per_user_per_grace} ({r.violators:,} users "
            "had more than one), by the broker's own decision times (`last_active_at`, ms; "
            f"{STAMP_TOLERANCE_S * 1000:g} ms tolerance); the shortest interval between two publishes "
            f"of one user was {r.min_gap_s:.3f} s. Whole run: {r.total_published:,} publishes, "
            f"{r.initial_online:,} of them the initial `online`s."
        )
        b_text = (
            f"- (b): {r.users_expected_b:,} of {r.clients:,} users got exactly `offline` then `online`; "
            f"`online` after `offline` (expected ≥ {r.grace_s:g} s): {gap_text}; peak "
            f"{outage.peak_per_s:,.0f} publishes/s."
        )
        lines += ["", a_text, once_text, b_text]
        errors_seen = [p.first_error for p in r.phases if p.first_error]
        if errors_seen:
            lines.append(f"First reconnect error: `{errors_seen[0]}`.")
        lines.append("")
    lines += [f"Failed: {e}" for e in errors]
    if not results and not errors:
        lines.append("(not run)")
    return [*lines, ""] if lines[-1] else lines


def insert_section(document: str, section: list[str]) -> str:
    """Replace section 5 of ``document`` (or put it before the next section after section 4)."""
    lines = document.splitlines()
    if SECTION_TITLE in lines:
        start = lines.index(SECTION_TITLE)
        end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    else:
        four = next((k for k, line in enumerate(lines) if line.startswith("## 4.")), -1)
        start = next((k for k in range(four + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
        end = start
    return "\n".join([*lines[:start], *section, *lines[end:]]) + ("\n" if document.endswith("\n") else "")
