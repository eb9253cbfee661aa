"""The pipeline scenarios: chat 1:1 and 100-member groups through ingest, commit, fan-out and ack.

Why through ``hubbub up`` and not the broker alone: a chat message is only delivered once
committed (DESIGN.md, "A message's way"), so these numbers include validation, the
Snowflake id, the SQLite commit (batched), the fan-out to every member's inbox and the
``ack`` to the sender — what a user waits for. Rates count messages *delivered to a
recipient* (the sender's own echo and the ack are not counted); latency is from the
sender's publish to a recipient's receipt.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx

from bench.chatload import ChatDevice, ChatJob, ChatReport, chat_worker_main
from bench.hubbub_up import BenchUser, start_platform
from bench.loadgen import NS
from bench.relay import CDF_POINTS, RelayError, _quantile

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

__all__ = ["ChatTarget", "PipelineResult", "profile_chat", "run_chat", "run_groups"]

START_DELAY = 0.5
_SETTINGS = {  # rate limits out of the way: the benchmark measures the pipeline, not the limiter
    "sends_per_second": "1000000",
    "send_burst": "1000000",
    "presence_grace_s": "600",
}


class ChatTarget(Protocol):
    """What the scenarios drive: ``hubbub up`` (``RunningPlatform``) or a cluster (``bench.cluster``)."""

    mqtt_host: str
    mqtt_port: int
    http_url: str

    def cpu_seconds(self) -> float | None:
        """CPU seconds used so far by the processes under test (read at the window's start and end)."""

    def make_users(self, count: int) -> list[BenchUser]:
        """``count`` users with one signed-in device each."""

    def create_conversation(self, http: httpx.Client, creator: BenchUser, body: dict[str, object]) -> int:
        """A conversation made over REST by ``creator``; its id."""


@dataclass
class PipelineResult:
    """One pipeline measurement."""

    scenario: str
    label: str
    devices: int
    connect_seconds: float
    sent: int
    acked: int
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    platform_cpu_pct: float
    offered_per_s: float = 0.0  # open loop: the sending rate asked for
    store_cpu_pct: float = float("nan")  # an external message store's server (PostgreSQL, Cassandra), if any
    cdf_ms: list[float] = field(default_factory=list)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _collect(pipes: list[Connection], kind: str, timeout: float) -> list[ChatReport]:
    reports: list[ChatReport] = []
    deadline = time.monotonic() + timeout
    for index, pipe in enumerate(pipes):
        if not pipe.poll(max(0.1, deadline - time.monotonic())):
            raise RelayError(f"chat worker {index} sent no {kind!r} in time")
        message = pipe.recv()
        if message[0] != kind:
            raise RelayError(f"chat worker {index}: {message[1] if message[0] == 'error' else message[0]}")
        reports.append(message[1])
    return reports


def _measure(
    platform: ChatTarget,
    devices: list[ChatDevice],
    *,
    scenario: str,
    label: str,
    duration: float,
    warmup: float,
    window: int = 0,
    rate: float = 0.0,
    workers: int = 2,
    store_cpu: Callable[[], float | None] | None = None,
    endpoints: list[tuple[str, int]] | None = None,
) -> PipelineResult:
    """Spawn the workers over ``devices``, run one window, reduce.

    ``endpoints``: worker ``w`` connects its devices to ``endpoints[w % len(endpoints)]`` (devices
    spread over broker nodes); by default all to the platform's MQTT port.
    """
    targets = endpoints or [(platform.mqtt_host, platform.mqtt_port)]
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    pipes: list[Connection] = []
    try:
        for w in range(workers):
            host, port = targets[w % len(targets)]
            job = ChatJob(
                host,
                port,
                devices[w::workers],
                duration,
                warmup,
                window=window,
                rate=rate / workers,
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=chat_worker_main, args=(job, child), name=f"bench-chat-{w}")
            proc.daemon = True
            proc.start()
            child.close()
            procs.append(proc)
            pipes.append(parent)
        ready = _collect(pipes, "ready", 180)
        errors = [e for r in ready for e in r.errors]
        if errors:
            raise RelayError(f"{len(errors)} devices failed to connect; first: {errors[0]}")
        start_ns = time.time_ns() + int(START_DELAY * NS)
        for pipe in pipes:
            pipe.send(("go", start_ns))
        time.sleep(max(0.0, (start_ns - time.time_ns()) / NS + warmup))
        cpu_before = platform.cpu_seconds()
        store_before = store_cpu() if store_cpu is not None else None
        time.sleep(max(0.0, (start_ns - time.time_ns()) / NS + duration))
        cpu_after = platform.cpu_seconds()
        store_after = store_cpu() if store_cpu is not None else None
        done = _collect(pipes, "result", duration + 120)
    finally:
        for started in procs:
            started.join(20)
            if started.is_alive():
                started.terminate()
                started.join(5)
    measured = duration - warmup
    latencies = array("q")
    for report in done:
        latencies.frombytes(report.latencies_us)
    values = sorted(latencies)
    cpu = _percent(cpu_before, cpu_after, measured)
    result = PipelineResult(
        scenario=scenario,
        label=label,
        devices=sum(r.connected for r in ready),
        connect_seconds=max(r.connect_seconds for r in ready),
        sent=sum(r.sent for r in done),
        acked=sum(r.acked for r in done),
        delivered_per_s=sum(r.delivered_window for r in done) / measured,
        p50_ms=_quantile(values, 0.5) / 1000,
        p99_ms=_quantile(values, 0.99) / 1000,
        platform_cpu_pct=cpu,
        offered_per_s=rate,
        store_cpu_pct=_percent(store_before, store_after, measured),
        cdf_ms=[_quantile(values, k / (CDF_POINTS - 1)) / 1000 for k in range(CDF_POINTS)] if values else [],
    )
    _say(
        f"[{scenario} {label}] {result.delivered_per_s:,.0f} delivered/s  p50 {result.p50_ms:.1f} ms"
        f"  p99 {result.p99_ms:.1f} ms  sent {result.sent:,} acked {result.acked:,}"
        f"  platform CPU {result.platform_cpu_pct:.0f} %"
    )
    return result


def _percent(before: float | None, after: float | None, seconds: float) -> float:
    """CPU seconds used over ``seconds`` in % of one core; NaN when either reading failed."""
    return float("nan") if before is None or after is None else 100 * (after - before) / seconds


def run_chat(pairs: int, duration: float, warmup: float, window: int) -> list[PipelineResult]:
    """``pairs`` direct conversations, both members sending: a closed-loop run, then an open loop at half."""
    platform = start_platform(_SETTINGS)
    try:
        devices = _pairs(platform, pairs)
        _say(f"[chat] {pairs} pairs ready; closed loop, {window} unacknowledged per device")
        peak = _measure(
            platform, devices, scenario="chat", label="max", duration=duration, warmup=warmup, window=window
        )
        half = peak.delivered_per_s / 2
        _say(f"[chat] open loop at {half:,.0f} messages/s (half the peak)")
        paced = _measure(
            platform, devices, scenario="chat", label="half", duration=duration, warmup=warmup, rate=half
        )
        return [peak, paced]
    finally:
        platform.stop()


def profile_chat(pairs: int, duration: float, warmup: float, window: int, output: Path) -> PipelineResult:
    """The closed-loop chat run again, with ``hubbub up`` under cProfile (written to ``output``)."""
    platform = start_platform(_SETTINGS, profile_to=output)
    try:
        devices = _pairs(platform, pairs)
        return _measure(
            platform,
            devices,
            scenario="chat",
            label="profiled",
            duration=duration,
            warmup=warmup,
            window=window,
        )
    finally:
        platform.stop()


def _pairs(platform: ChatTarget, pairs: int) -> list[ChatDevice]:
    users = platform.make_users(2 * pairs)
    devices: list[ChatDevice] = []
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        for k in range(pairs):
            a, b = users[2 * k], users[2 * k + 1]
            cid = platform.create_conversation(http, a, {"type": "direct", "user_id": str(b.user_id)})
            devices += [_device(a, cid), _device(b, cid)]
    return devices


def run_groups(  # noqa: PLR0917 - the scenario's knobs, all required
    groups: int, members: int, senders: int, duration: float, warmup: float, window: int
) -> PipelineResult:
    """``groups`` groups of ``members``; ``senders`` of each send, every member receives."""
    platform = start_platform({**_SETTINGS, "max_group_members": str(max(members, 2))})
    try:
        devices = _groups(platform, groups, members, senders)
        _say(f"[groups] {groups} groups of {members}, {senders} senders each")
        return _measure(
            platform,
            devices,
            scenario="groups",
            label=f"{groups}x{members}",
            duration=duration,
            warmup=warmup,
            window=window,
        )
    finally:
        platform.stop()


def _groups(platform: ChatTarget, groups: int, members: int, senders: int) -> list[ChatDevice]:
    """``groups`` groups of ``members`` made over REST; the first ``senders`` of each send to it."""
    users = platform.make_users(groups * members)
    devices: list[ChatDevice] = []
    with httpx.Client(base_url=platform.http_url, timeout=60) as http:
        for g in range(groups):
            group = users[g * members : (g + 1) * members]
            body: dict[str, object] = {
                "type": "group",
                "title": f"bench {g}",
                "member_ids": [str(u.user_id) for u in group[1:]],
            }
            cid = platform.create_conversation(http, group[0], body)
            devices += [_device(u, cid if k < senders else 0) for k, u in enumerate(group)]
    return devices


def _device(user: BenchUser, conversation_id: int) -> ChatDevice:
    return ChatDevice(user.user_id, user.device_id, user.token, conversation_id)
