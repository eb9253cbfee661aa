"""Failover in a cluster: ``kill -9`` of a broker node holding N devices.

N devices (one per user, each subscribed to its inbox) sit on broker-1; it is killed. Each device
fails over as a client does (``bench.cluster_devices``: the next listed node with the token it
holds, then ``GET /v1/sync`` until caught up). The devices' users are in groups of 99 with one
sender each on the surviving node, who sends ``MISSED`` messages right after the kill: a device is
caught up once its sync returns all of them. The figures are from the kill to the last device
connected, and to the last one caught up.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.cluster_devices import RETRY_S, DeviceJob, DeviceReport, Sender, receive, worker_main
from bench.mqtt_wire import MqttConnection
from client.route import Endpoint
from hubbub import topics

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from bench.cluster_target import ClusterTarget, DeviceLogin
    from bench.hubbub_up import BenchUser

__all__ = ["BrokerFailover", "run_broker_failover"]

NS = 1_000_000_000
MISSED = 20  # messages each failover device's group gets while the device is away
GROUP_SIZE = 100  # a sender and 99 failover devices
SENDER_DEADLINE_S = 120.0  # a device told a broker that refuses it asks again after this


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class BrokerFailover:
    """``kill -9`` of a broker node: how long until its devices were elsewhere and caught up."""

    devices: int
    reconnected: int
    synced: int
    detected_s: float  # kill to the last device seeing its connection end
    first_connected_s: float  # kill to the first device connected elsewhere (discovery named a live node)
    all_connected_s: float  # kill to the last device connected and subscribed elsewhere
    all_synced_s: float  # kill to the last device caught up
    p50_synced_s: float
    discoveries: int  # GET /v1/brokers asked (a device asks once every node it was given failed)
    missed: int  # messages each device missed while away (its group's), returned by its sync
    syncs: int
    connects_per_s: float  # reconnections over the span from the first to the last
    connect_p50_s: float  # one reconnection's CONNECT + SUBSCRIBE once in the gate, set-up included
    connect_p99_s: float
    sync_p50_s: float  # one GET /v1/sync, as the device waits for it
    sync_p99_s: float
    syncs_per_s: float  # syncs answered over the span from the first reconnection to the last catch-up
    cpu_s: dict[str, float]  # CPU seconds of each kind of process from the kill to the last catch-up
    errors: list[str]
    kb_per_connection: float  # broker-1's RSS growth per device held (its inbox subscription included)


def _groups_of(target: ClusterTarget, logins: list[DeviceLogin]) -> list[tuple[BenchUser, int]]:
    """The devices' users in groups of ``GROUP_SIZE`` - 1, each with a sender of its own (not on broker-1)."""
    members = GROUP_SIZE - 1
    chunks = [logins[k : k + members] for k in range(0, len(logins), members)]
    senders = target.make_users(len(chunks))
    groups = []
    with httpx.Client(base_url=target.http_url, timeout=60) as http:
        for sender, chunk in zip(senders, chunks, strict=True):
            body: dict[str, object] = {
                "type": "group",
                "title": "failover",
                "member_ids": [str(login.user_id) for login in chunk],
            }
            groups.append((sender, target.create_conversation(http, sender, body)))
    return groups


async def _send_missed(target: ClusterTarget, groups: list[tuple[BenchUser, int]], missed: int) -> None:
    """Each group's sender, on the surviving node, sends ``missed`` messages and waits for their acks."""

    async def one(sender: BenchUser, conversation_id: int) -> None:
        host, port = target.brokers[-1].ready.mqtt
        conn = await MqttConnection.open(
            host, port, client_id=sender.device_id, username=str(sender.user_id), password=sender.token
        )
        try:
            await conn.subscribe([(topics.inbox(sender.user_id), 1)])
            device = Sender(conn, conversation_id)
            for k in range(missed):
                device.send_one(f"missed-{k}", "sent while you were away")
            reader = asyncio.create_task(device.read())
            for _ in range(int(SENDER_DEADLINE_S / RETRY_S)):
                if len(device.acks) >= missed:
                    break
                await asyncio.sleep(RETRY_S)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        finally:
            conn.close()

    async with asyncio.timeout(SENDER_DEADLINE_S):
        await asyncio.gather(*(one(sender, cid) for sender, cid in groups))


def _rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _seconds(after_ns: list[int], since_ns: int, q: float = 1.0) -> float:
    if not after_ns:
        return float("nan")
    ordered = sorted(after_ns)
    return (ordered[min(len(ordered) - 1, int(q * len(ordered)))] - since_ns) / NS


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_by_kind(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two readings, summed by kind (``broker``: the survivor alone)."""
    spent: dict[str, float] = {}
    for name, value in after.items():
        kind = name.split("-")[0] if not name.startswith("nats") else "nats"
        spent[kind] = spent.get(kind, 0.0) + value - before.get(name, value)
    return spent


def _listed_brokers(target: ClusterTarget, device: DeviceLogin) -> list[Endpoint]:
    """What the devices' login answered: every broker node, broker-1 (where they are put) first."""
    with httpx.Client(base_url=target.http_url, timeout=60) as http:
        response = http.get("/v1/brokers", headers={"Authorization": f"Bearer {device.access_token}"})
        response.raise_for_status()
        brokers: list[Endpoint] = response.json()["brokers"]
    first = target.brokers[0].ready.mqtt
    return sorted(brokers, key=lambda endpoint: (endpoint["host"], int(endpoint["port"])) != first)


def run_broker_failover(  # noqa: PLR0917 - the scenario's knobs
    target: ClusterTarget,
    devices: int,
    workers: int = 2,
    concurrency: int = 50,
    deadline_s: float = 300,
    missed: int = MISSED,
) -> BrokerFailover:
    """``devices`` devices on broker-1, which is then killed; they move to broker-2 and sync.

    Run on a fresh broker-1: its RSS growth per device held is then the devices' alone.
    """
    logins = target.make_logins(devices)
    groups = _groups_of(target, logins)
    host, port = target.brokers[0].ready.mqtt
    brokers = _listed_brokers(target, logins[0])
    rss_before = _rss_bytes(target.brokers[0].pid)
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    pipes: list[Connection] = []
    try:
        for w in range(workers):
            api_url = target.http_urls[w % len(target.http_urls)]  # as a balancer would spread them
            job = DeviceJob(api_url, host, port, brokers, logins[w::workers], concurrency, deadline_s, missed)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(job, child), name=f"bench-failover-{w}")
            proc.daemon = True
            proc.start()
            child.close()
            procs.append(proc)
            pipes.append(parent)
        connected = sum(int(str(receive(pipe, "ready", deadline_s))) for pipe in pipes)
        held = _rss_bytes(target.brokers[0].pid) - rss_before
        _say(f"[failover] {connected:,} of {devices:,} devices on broker-1; kill -9")
        cpu_before = target.cpu_by_process()
        killed_ns = time.time_ns()
        target.brokers[0].kill()
        asyncio.run(_send_missed(target, groups, missed))
        reports = [receive(pipe, "result", deadline_s * 2) for pipe in pipes]
        cpu_after = target.cpu_by_process()
    finally:
        for started in procs:
            started.join(10)
            if started.is_alive():
                started.terminate()
    merged = DeviceReport()
    for report in reports:
        assert isinstance(report, DeviceReport)  # noqa: S101 - narrowing what came over the pipe
        merged.merge(report)
    span = (max(merged.reconnected_ns, default=0) - min(merged.reconnected_ns, default=0)) / NS
    sync_span = (max(merged.synced_ns, default=0) - min(merged.reconnected_ns, default=0)) / NS
    result = BrokerFailover(
        devices=connected,
        reconnected=len(merged.reconnected_ns),
        synced=len(merged.synced_ns),
        detected_s=_seconds(merged.dropped_ns, killed_ns),
        first_connected_s=_seconds(merged.reconnected_ns, killed_ns, 0.0),
        all_connected_s=_seconds(merged.reconnected_ns, killed_ns),
        all_synced_s=_seconds(merged.synced_ns, killed_ns),
        p50_synced_s=_seconds(merged.synced_ns, killed_ns, 0.5),
        discoveries=merged.discoveries,
        missed=missed,
        syncs=merged.syncs,
        connects_per_s=len(merged.reconnected_ns) / span if span > 0 else float("nan"),
        connect_p50_s=_quantile(merged.connect_s, 0.5),
        connect_p99_s=_quantile(merged.connect_s, 0.99),
        sync_p50_s=_quantile(merged.sync_s, 0.5),
        sync_p99_s=_quantile(merged.sync_s, 0.99),
        syncs_per_s=merged.syncs / sync_span if sync_span > 0 else float("nan"),
        cpu_s=_cpu_by_kind(cpu_before, cpu_after),
        errors=merged.errors[:5],
        kb_per_connection=held / 1024 / connected if connected else float("nan"),
    )
    _say(
        f"[failover] broker: {result.reconnected:,} reconnected in {result.all_connected_s:.1f} s, "
        f"{result.synced:,} caught up in {result.all_synced_s:.1f} s "
        f"({result.connects_per_s:,.0f} connects/s, CONNECT p50 {result.connect_p50_s * 1e3:.0f} ms; "
        f"{result.syncs:,} syncs, {result.syncs_per_s:,.0f}/s, p50 {result.sync_p50_s * 1e3:.0f} ms; "
        f"{result.discoveries:,} discoveries; CPU s {result.cpu_s})"
    )
    return result
