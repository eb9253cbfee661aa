"""Failover in a cluster: ``kill -9`` of a broker node holding N devices, and of a shard's persister.

Broker node: N devices (one per user, each subscribed to its inbox) sit on broker-1; it is
killed. Each device does what docs/clients.md says a client does after losing its connection
(``client.connection`` with ``client.route``): after a jittered wait it connects to the next
broker node its login listed, with the access token it holds (no refresh: the token is valid on
every node), asking ``GET /v1/brokers`` only once every listed node has failed; it subscribes to
its inbox, then ``GET /v1/sync`` until every entry is complete. The devices'
users are in groups of 99 with one sender each on the surviving node, who sends ``MISSED``
messages right after the kill: a device is caught up once its sync returns all of them. The
figures are from the kill to the last device connected, and to the last one caught up. At most
``concurrency`` MQTT connects are in flight per worker process, and ``HTTP_CONCURRENCY`` REST
requests (the generator's limits, not the platform's).

Persister: a device keeps sending to a conversation (one message per ``SEND_EVERY_S``); the
persister owning its shard (read from the ``persister`` lease bucket) is killed. The figures are
from the kill to the lease record naming another owner, and to the first ``ack`` (sent only
after a commit) the device receives after that change: the new owner's first commit of the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import nats
import orjson
from nats.js.errors import KeyNotFoundError

from bench import eventloop
from bench.mqtt_wire import PUBLISH, MqttConnection, encode_publish, publish_payload_offset
from client.route import BrokerRoute, Endpoint
from cluster.leases import LeaseRecord, bucket_name
from hubbub import topics

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from bench.cluster_target import ClusterTarget, DeviceLogin
    from bench.hubbub_up import BenchUser

__all__ = ["BrokerFailover", "PersisterFailover", "run_broker_failover", "run_persister_failover"]

NS = 1_000_000_000
KEEPALIVE_S = 600
SEND_EVERY_S = 0.02
FLOWING_ACKS = 5  # acks seen before the kill: commits flow
# Per worker, each on its own API process: under that process's pools (10 connections each, account
# store and history): past them every request would open and close an overflow connection.
HTTP_CONCURRENCY = 8
RETRY_S = 0.2
MISSED = 20  # messages each failover device's group gets while the device is away
GROUP_SIZE = 100  # a sender and 99 failover devices
SENDER_DEADLINE_S = 120.0  # a device told a broker that refuses it asks again after this
_ACK = b'{"kind":"ack"'


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@dataclass
class _Job:
    api_url: str
    host: str
    port: int
    brokers: list[Endpoint]  # what the devices' login answered: broker-1 (theirs) first
    devices: list[DeviceLogin]
    concurrency: int
    deadline_s: float
    missed: int = 0  # messages each device's group gets while it is away: its sync must return them
    http_concurrency: int = HTTP_CONCURRENCY
    gate: asyncio.Semaphore = field(init=False, repr=False)  # MQTT connects in flight (made in the worker)


@dataclass
class _Report:
    connected: int = 0
    errors: list[str] = field(default_factory=list)
    dropped_ns: list[int] = field(default_factory=list)
    reconnected_ns: list[int] = field(default_factory=list)
    synced_ns: list[int] = field(default_factory=list)
    discoveries: int = 0
    syncs: int = 0
    ports: dict[int, int] = field(default_factory=dict)
    connect_s: list[float] = field(default_factory=list)  # each reconnection's CONNECT + SUBSCRIBE
    sync_s: list[float] = field(default_factory=list)  # each GET /v1/sync


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
    connect_p50_s: float  # one reconnection's CONNECT + SUBSCRIBE, connection set-up included
    connect_p99_s: float
    sync_p50_s: float  # one GET /v1/sync, as the device waits for it
    sync_p99_s: float
    syncs_per_s: float  # syncs answered over the span from the first reconnection to the last catch-up
    cpu_s: dict[str, float]  # CPU seconds of each kind of process from the kill to the last catch-up
    errors: list[str]
    kb_per_connection: float  # broker-1's RSS growth per device held (its inbox subscription included)


async def _reconnect(device: DeviceLogin, job: _Job, http: httpx.AsyncClient, report: _Report) -> None:
    """What ``client.connection`` does when its node dies: the next listed node, the same token."""
    route = BrokerRoute(job.brokers)
    step = route.failed()  # the node it was on (the first listed) is gone
    deadline = time.monotonic() + job.deadline_s
    headers = {"Authorization": f"Bearer {device.access_token}"}
    while time.monotonic() < deadline:
        await asyncio.sleep(step.delay_s)
        if step.ask_registry:
            response = await http.get("/v1/brokers", headers=headers)
            report.discoveries += 1
            response.raise_for_status()
            route.replace(response.json()["brokers"])
        host, port = route.current["host"], int(route.current["port"])
        began = time.monotonic()
        try:
            async with job.gate, asyncio.timeout(15):
                conn = await MqttConnection.open(
                    host,
                    port,
                    client_id=device.device_id,
                    username=str(device.user_id),
                    password=device.access_token,
                    keepalive=KEEPALIVE_S,
                )
                await conn.subscribe([(topics.inbox(device.user_id), 1)])
        except (OSError, TimeoutError):
            step = route.failed()
            continue
        report.connect_s.append(time.monotonic() - began)
        report.reconnected_ns.append(time.time_ns())
        report.ports[port] = report.ports.get(port, 0) + 1
        await _catch_up(http, headers, job, report)
        report.synced_ns.append(time.time_ns())
        conn.close()
        return
    raise TimeoutError(f"{device.device_id} found no broker in {job.deadline_s} s")


async def _catch_up(http: httpx.AsyncClient, headers: dict[str, str], job: _Job, report: _Report) -> None:
    """``GET /v1/sync`` until complete and holding the ``missed`` messages (some may be still committing)."""
    for _ in range(int(job.deadline_s / RETRY_S)):
        began = time.monotonic()
        sync = await http.get("/v1/sync", headers=headers)
        report.sync_s.append(time.monotonic() - began)
        report.syncs += 1
        sync.raise_for_status()
        entries = sync.json()["conversations"]
        held = sum(len(entry["messages"]) for entry in entries)
        if held >= job.missed and all(entry.get("complete", True) for entry in entries):
            return
        await asyncio.sleep(RETRY_S)  # the senders' messages are not all committed yet: ask again
    raise TimeoutError(f"sync never held the {job.missed} missed messages")


async def _device(device: DeviceLogin, job: _Job, http: httpx.AsyncClient, report: _Report) -> None:
    async with job.gate, asyncio.timeout(30):
        conn = await MqttConnection.open(
            job.host,
            job.port,
            client_id=device.device_id,
            username=str(device.user_id),
            password=device.access_token,
            keepalive=KEEPALIVE_S,
        )
        await conn.subscribe([(topics.inbox(device.user_id), 1)])
    report.connected += 1
    with contextlib.suppress(Exception):
        for _ in range(1 << 62):
            await conn.read_packets()
    report.dropped_ns.append(time.time_ns())
    conn.close()
    await _reconnect(device, job, http, report)


async def _worker(job: _Job, pipe: Connection) -> None:
    report = _Report()
    job.gate = asyncio.Semaphore(job.concurrency)
    limits = httpx.Limits(max_connections=job.http_concurrency)
    async with httpx.AsyncClient(base_url=job.api_url, timeout=60, limits=limits) as http:
        tasks = [asyncio.create_task(_device(d, job, http, report)) for d in job.devices]
        for _ in range(int(job.deadline_s * 10)):
            if report.connected + sum(t.done() for t in tasks) >= len(tasks):
                break
            await asyncio.sleep(0.1)
        pipe.send(("ready", report.connected))
        done = await asyncio.gather(*tasks, return_exceptions=True)
    report.errors = [repr(r) for r in done if isinstance(r, BaseException)]
    pipe.send(("result", report))


def _worker_main(job: _Job, pipe: Connection) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(job.deadline_s * 2):
            await _worker(job, pipe)

    try:
        eventloop.run(bounded())
    except Exception:  # noqa: BLE001 - reported to the parent
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def _receive(pipe: Connection, kind: str, timeout: float) -> object:
    if not pipe.poll(timeout):
        raise RuntimeError(f"failover worker sent no {kind!r} in {timeout} s")
    message = pipe.recv()
    if message[0] != kind:
        raise RuntimeError(f"failover worker: {message[1]}")
    return message[1]


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
            device = _Sender(conn, conversation_id)
            for k in range(missed):
                device.sent[f"missed-{k}"] = time.time_ns()
                payload = orjson.dumps({"cmid": f"missed-{k}", "text": "sent while you were away"})
                conn.writer.write(encode_publish(device.topic, payload, 1, conn.next_packet_id()))
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
            job = _Job(api_url, host, port, brokers, logins[w::workers], concurrency, deadline_s, missed)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(job, child), name=f"bench-failover-{w}")
            proc.daemon = True
            proc.start()
            child.close()
            procs.append(proc)
            pipes.append(parent)
        connected = sum(int(str(_receive(pipe, "ready", deadline_s))) for pipe in pipes)
        held = _rss_bytes(target.brokers[0].pid) - rss_before
        _say(f"[failover] {connected:,} of {devices:,} devices on broker-1; kill -9")
        cpu_before = target.cpu_by_process()
        killed_ns = time.time_ns()
        target.brokers[0].kill()
        asyncio.run(_send_missed(target, groups, missed))
        reports = [_receive(pipe, "result", deadline_s * 2) for pipe in pipes]
        cpu_after = target.cpu_by_process()
    finally:
        for started in procs:
            started.join(10)
            if started.is_alive():
                started.terminate()
    merged = _Report()
    for report in reports:
        assert isinstance(report, _Report)  # noqa: S101 - narrowing what came over the pipe
        merged.dropped_ns += report.dropped_ns
        merged.reconnected_ns += report.reconnected_ns
        merged.synced_ns += report.synced_ns
        merged.discoveries += report.discoveries
        merged.syncs += report.syncs
        merged.errors += report.errors
        merged.connect_s += report.connect_s
        merged.sync_s += report.sync_s
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


@dataclass(frozen=True)
class PersisterFailover:
    """``kill -9`` of the persister owning a shard: when another owned it and committed."""

    shard: int
    old_owner: str
    new_owner: str
    lease_moved_s: float  # kill to the lease record naming the new owner
    first_commit_s: float  # kill to the first ack received after the lease moved
    longest_wait_s: float  # the longest send-to-ack of a message sent around the kill


async def _lease(kv: object, shard: int) -> LeaseRecord | None:
    from nats.js.kv import KeyValue  # noqa: PLC0415 - only for the type check

    assert isinstance(kv, KeyValue)  # noqa: S101
    try:
        return LeaseRecord.parse(await kv.get(f"shard.{shard}"))
    except KeyNotFoundError:
        return None


class _Sender:
    """One device sending to a conversation at a steady pace, timing each ack."""

    def __init__(self, conn: MqttConnection, conversation_id: int) -> None:
        self.conn = conn
        self.topic = topics.conversation_send(conversation_id)
        self.sent: dict[str, int] = {}
        self.acks: list[tuple[int, int]] = []  # (received ns, sent ns)

    async def send(self, stop: asyncio.Event) -> None:
        for k in range(1 << 62):
            if stop.is_set():
                return
            cmid = f"pf-{time.time_ns()}-{k}"
            self.sent[cmid] = time.time_ns()
            payload = orjson.dumps({"cmid": cmid, "text": "persister failover"})
            self.conn.writer.write(encode_publish(self.topic, payload, 1, self.conn.next_packet_id()))
            await asyncio.sleep(SEND_EVERY_S)

    async def read(self) -> None:
        for _ in range(1 << 62):
            packets = await self.conn.read_packets()
            now = time.time_ns()
            for packet in packets:
                if packet.ptype != PUBLISH:
                    continue
                start = publish_payload_offset(packet.flags, packet.body)
                if packet.flags & 0x06:
                    self.conn.puback(int.from_bytes(packet.body[start - 2 : start]))
                if packet.body.startswith(_ACK, start):
                    cmid = orjson.loads(packet.body[start:]).get("cmid")
                    if cmid in self.sent:
                        self.acks.append((now, self.sent[cmid]))


async def _persister_failover(
    target: ClusterTarget, sender: BenchUser, conversation_id: int
) -> PersisterFailover:
    shard = target.shards.conversation(conversation_id)
    client = await nats.connect(servers=target.nats.urls)
    host, port = target.brokers[-1].ready.mqtt
    conn = await MqttConnection.open(
        host, port, client_id=sender.device_id, username=str(sender.user_id), password=sender.token
    )
    await conn.subscribe([(topics.inbox(sender.user_id), 1)])
    device = _Sender(conn, conversation_id)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(device.send(stop)), asyncio.create_task(device.read())]
    try:
        kv = await client.jetstream().key_value(bucket_name("persister"))
        for _ in range(600):  # the flow runs: acks come back
            if len(device.acks) >= FLOWING_ACKS:
                break
            await asyncio.sleep(0.05)
        old = await _lease(kv, shard)
        if old is None:
            raise RuntimeError(f"no persister owns shard {shard}")
        killed_ns = time.time_ns()
        await asyncio.to_thread(target.processes[old.owner].kill)
        new = old
        for _ in range(1200):
            record = await _lease(kv, shard)
            if record is not None and record.owner != old.owner:
                new = record
                break
            await asyncio.sleep(0.05)
        moved_ns = time.time_ns()
        for _ in range(1200):
            if any(received > moved_ns for received, _ in device.acks):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # the messages held up by the kill are acked too
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.close()
        await client.close()
    first = min((received for received, _ in device.acks if received > moved_ns), default=0)
    around = [received - sent for received, sent in device.acks if received > killed_ns]
    return PersisterFailover(
        shard=shard,
        old_owner=old.owner,
        new_owner=new.owner,
        lease_moved_s=(moved_ns - killed_ns) / NS if new is not old else float("nan"),
        first_commit_s=(first - killed_ns) / NS if first else float("nan"),
        longest_wait_s=max(around, default=0) / NS,
    )


def run_persister_failover(target: ClusterTarget) -> PersisterFailover:
    """A fresh 1:1 conversation with a sending device; its shard's persister killed."""
    a, b = target.make_users(2)
    with httpx.Client(base_url=target.http_url, timeout=30) as http:
        cid = target.create_conversation(http, a, {"type": "direct", "user_id": str(b.user_id)})
    result = asyncio.run(_persister_failover(target, a, cid))
    _say(
        f"[failover] persister of shard {result.shard} ({result.old_owner}) killed: lease to "
        f"{result.new_owner} in {result.lease_moved_s:.1f} s, first commit {result.first_commit_s:.1f} s"
    )
    return result
