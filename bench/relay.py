"""The "relay" scenario: S subscribers on their own exact topics, one QoS 0 publisher round-robin.

Why this shape: it is the chat platform's hot path (one message to one user's inbox), it isolates
per-message routing cost from fan-out, and with a fixed window in flight it measures the
broker's sustainable rate rather than how fast it can buffer. This module runs the worker
processes, hands them the clients the ``BrokerUnderTest`` defines, and reduces their reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.loadgen import NS, ClientSpec, LoadParams, WorkerJob, WorkerReport, worker_main

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from bench.brokers import BrokerUnderTest

CDF_POINTS = 200
OTHER_CPU_WARN = 30.0  # % of one core used outside broker and generator that makes a run suspect
START_DELAY = 0.3  # seconds between "go" and the first publish, so every worker has seen "go"


class RelayError(RuntimeError):
    """A worker failed or the run produced nothing to measure."""


@dataclass
class RelayResult:
    """One (broker, size) measurement, ready for the report."""

    broker: str
    version: str
    subscriptions: int
    connected: int
    connect_seconds: float
    msgs_per_s: float
    p50_ms: float
    p99_ms: float
    sent: int
    received: int
    lost: int
    stalls: int
    measured_seconds: float
    broker_cpu_pct: float = float("nan")  # of one core, over the measured window
    generator_cpu_pct: float = float("nan")  # all worker processes together, of one core
    machine_cpu_pct: float = float("nan")  # all cores busy, including the kernel's loopback work
    first_error: str = ""
    cdf_ms: list[float] = field(default_factory=list)  # latency at CDF_POINTS evenly spaced quantiles

    @property
    def other_cpu_pct(self) -> float:
        """CPU (% of one core) used by neither the broker nor the generator: other load, or kernel."""
        return self.machine_cpu_pct * (os.cpu_count() or 1) - self.broker_cpu_pct - self.generator_cpu_pct

    @property
    def connect_rate(self) -> float:
        """Subscribers connected and subscribed per second during ramp-up."""
        return self.connected / self.connect_seconds if self.connect_seconds > 0 else 0.0


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def client_specs(broker: BrokerUnderTest, size: int) -> tuple[list[ClientSpec], ClientSpec]:
    """Ask the broker for every subscriber's credentials and topic, and the publisher's login."""
    subs = []
    for i in range(size):
        cred = broker.credentials_for(i)
        subs.append(ClientSpec(i, cred.client_id, cred.username, cred.password, broker.topic_for(i)))
    pub = broker.publisher_credentials(0)
    return subs, ClientSpec(-1, pub.client_id, pub.username, pub.password, "")


def _collect(pipes: list[Connection], kind: str, timeout: float) -> list[WorkerReport]:
    """Wait for one ``kind`` message from every worker, within ``timeout`` in total."""
    deadline = time.monotonic() + timeout
    reports: list[WorkerReport] = []
    for index, pipe in enumerate(pipes):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0 or not pipe.poll(remaining):
                raise RelayError(f"worker {index} sent no {kind!r} within {timeout:.0f} s")
            message = pipe.recv()
        except (EOFError, OSError) as exc:
            raise RelayError(f"worker {index} died before {kind!r}") from exc
        if message[0] == "error":
            raise RelayError(f"worker {index} failed:\n{message[1]}")
        if message[0] != kind:
            raise RelayError(f"worker {index} sent {message[0]!r}, expected {kind!r}")
        reports.append(message[1])
    return reports


def _stop_workers(procs: list[BaseProcess], pipes: list[Connection], grace: float) -> None:
    """Join each worker; SIGTERM then SIGKILL stragglers (our own children, by their pid)."""
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.1, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    for pipe in pipes:
        with contextlib.suppress(OSError):
            pipe.close()


def _quantile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))])


def _reduce(
    broker: BrokerUnderTest,
    size: int,
    params: LoadParams,
    ready: list[WorkerReport],
    done: list[WorkerReport],
) -> RelayResult:
    latencies = array("q")
    for report in done:
        latencies.frombytes(report.latencies_us)
    values = sorted(latencies)
    measured = params.duration - params.warmup
    received_window = sum(r.received_window for r in done)
    sent = sum(r.sent for r in done)
    received = sum(r.received_total for r in done)
    return RelayResult(
        broker=broker.name,
        version=broker.version(),
        subscriptions=size,
        connected=sum(r.connected for r in ready),
        connect_seconds=max(r.connect_seconds for r in ready),
        msgs_per_s=received_window / measured,
        p50_ms=_quantile(values, 0.50) / 1000,
        p99_ms=_quantile(values, 0.99) / 1000,
        sent=sent,
        received=received,
        lost=max(0, sent - received),
        stalls=sum(r.stalls for r in done),
        measured_seconds=measured,
        first_error=next((r.first_error for r in ready if r.first_error), ""),
        cdf_ms=[_quantile(values, k / (CDF_POINTS - 1)) / 1000 for k in range(CDF_POINTS)] if values else [],
    )


def _sleep_until(wall_ns: int) -> None:
    time.sleep(max(0.0, (wall_ns - time.time_ns()) / NS))


def _machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat; (0, 0) where there is no /proc."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0, 0
    ticks = [int(v) for v in first]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # noqa: PLR2004 - idle + iowait columns
    return sum(ticks[:8]) - idle, sum(ticks[:8])


def _cpu_window(broker: BrokerUnderTest, start_ns: int, params: LoadParams) -> tuple[float, float]:
    """Broker CPU % of one core, and machine-wide busy % of all cores, over the measured window."""
    _sleep_until(start_ns + int(params.warmup * NS))
    before, machine_before = broker.cpu_seconds(), _machine_busy()
    _sleep_until(start_ns + int(params.duration * NS))
    after, machine_after = broker.cpu_seconds(), _machine_busy()
    seconds = params.duration - params.warmup
    broker_pct = float("nan") if before is None or after is None else 100 * (after - before) / seconds
    total = machine_after[1] - machine_before[1]
    machine_pct = 100 * (machine_after[0] - machine_before[0]) / total if total > 0 else float("nan")
    return broker_pct, machine_pct


def run_relay(broker: BrokerUnderTest, host: str, port: int, size: int, params: LoadParams) -> RelayResult:
    """Run one relay measurement against an already started broker; workers always get stopped."""
    if params.payload_size < 16:  # noqa: PLR2004 - the payload holds two int64 stamps
        raise ValueError("payload size must be at least 16 bytes")
    if not 0 <= params.warmup < params.duration:
        raise ValueError("warmup must be shorter than duration")
    subs, pub = client_specs(broker, size)
    ctx = multiprocessing.get_context("spawn")
    counters = ctx.RawArray(ctypes.c_int64, params.workers + 2)
    procs: list[BaseProcess] = []
    pipes: list[Connection] = []
    label = f"[{broker.name} {size}]"
    grace = 2.0  # on failure, stragglers may be blocked sending a report nobody will read
    try:
        for w in range(params.workers):
            job = WorkerJob(w, host, port, subs[w :: params.workers], pub if w == 0 else None, params)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(job, child, counters), name=f"bench-worker-{w}")
            proc.daemon = True
            proc.start()
            child.close()
            procs.append(proc)
            pipes.append(parent)
        _say(f"{label} connecting {size} subscribers ({params.workers} workers)")
        ready = _collect(pipes, "ready", params.connect_deadline + 60)
        connected = sum(r.connected for r in ready)
        seconds = max(r.connect_seconds for r in ready)
        rate = connected / max(seconds, 1e-9)
        _say(f"{label} connected {connected}/{size} in {seconds:.1f} s ({rate:.0f} conn/s)")
        failed = {i for r in ready for i in r.failed}
        if failed:
            first = next((r.first_error for r in ready if r.first_error), "")
            _say(f"{label} {len(failed)} subscribers failed; first error: {first}")
        topics = [spec.topic for spec in subs if spec.index not in failed]
        if not topics:
            raise RelayError(f"{label} no subscriber connected")
        start_ns = time.time_ns() + int(START_DELAY * NS)
        for w, pipe in enumerate(pipes):
            pipe.send(("go", start_ns, topics if w == 0 else []))
        broker_cpu, machine_cpu = _cpu_window(broker, start_ns, params)
        done = _collect(pipes, "result", START_DELAY + params.duration + params.drain + 120)
        result = _reduce(broker, size, params, ready, done)
        result.broker_cpu_pct, result.machine_cpu_pct = broker_cpu, machine_cpu
        result.generator_cpu_pct = 100 * sum(r.cpu_seconds for r in done) / result.measured_seconds
        grace = 30.0
        if result.other_cpu_pct > OTHER_CPU_WARN:
            _say(f"{label} WARNING: other load used {result.other_cpu_pct:.0f} % of a core; rerun when idle")
        _say(
            f"{label} {result.msgs_per_s:,.0f} msg/s  p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms"
            f"  sent {result.sent:,} received {result.received:,} lost {result.lost:,}"
            f"  CPU broker {result.broker_cpu_pct:.0f} % generator {result.generator_cpu_pct:.0f} %"
            f" machine {result.machine_cpu_pct:.0f} %"
        )
        return result
    finally:
        _stop_workers(procs, pipes, grace=grace)
