"""The devices of the cluster's failover scenarios: a worker process of failing-over devices, a sender.

A worker process holds its share of the devices on broker-1 and, when broker-1 dies, does for
each what docs/clients.md says a client does after losing its connection (``client.connection``
with ``client.route``): after a jittered wait it connects to the next broker node its login
listed, with the access token it holds (no refresh: the token is valid on every node), asking
``GET /v1/brokers`` only once every listed node has failed; it subscribes to its inbox, then
``GET /v1/sync`` until every entry is complete and holds the messages its group got meanwhile.
At most ``concurrency`` MQTT connects are in flight per worker process, and ``http_concurrency``
REST requests (the generator's limits, not the platform's), over ``bench.cluster_http``.

``Sender`` is one device sending to a conversation and timing each ``ack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from bench import eventloop
from bench.cluster_http import HttpPool
from bench.mqtt_wire import PUBLISH, MqttConnection, encode_publish, publish_payload_offset
from client.route import BrokerRoute, Endpoint
from hubbub import topics

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from bench.cluster_target import DeviceLogin

__all__ = ["DeviceJob", "DeviceReport", "Sender", "receive", "worker_main"]

KEEPALIVE_S = 600
# Per worker, each on its own API process: under that process's pools (10 connections each, account
# store and history): past them every request would open and close an overflow connection.
HTTP_CONCURRENCY = 8
RETRY_S = 0.2
_ACK = b'{"kind":"ack"'


@dataclass
class DeviceJob:
    """One worker process's devices, and where they are and go."""

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
class DeviceReport:
    """What one worker process saw, sent back to the scenario over its pipe."""

    connected: int = 0
    errors: list[str] = field(default_factory=list)
    dropped_ns: list[int] = field(default_factory=list)
    reconnected_ns: list[int] = field(default_factory=list)
    synced_ns: list[int] = field(default_factory=list)
    discoveries: int = 0
    syncs: int = 0
    ports: dict[int, int] = field(default_factory=dict)
    connect_s: list[float] = field(default_factory=list)  # a reconnection's CONNECT + SUBSCRIBE (in the gate)
    sync_s: list[float] = field(default_factory=list)  # each GET /v1/sync

    def merge(self, other: DeviceReport) -> None:
        """Add ``other``'s figures to these."""
        self.connected += other.connected
        self.errors += other.errors
        self.dropped_ns += other.dropped_ns
        self.reconnected_ns += other.reconnected_ns
        self.synced_ns += other.synced_ns
        self.discoveries += other.discoveries
        self.syncs += other.syncs
        for port, count in other.ports.items():
            self.ports[port] = self.ports.get(port, 0) + count
        self.connect_s += other.connect_s
        self.sync_s += other.sync_s


async def _reconnect(device: DeviceLogin, job: DeviceJob, http: HttpPool, report: DeviceReport) -> None:
    """What ``client.connection`` does when its node dies: the next listed node, the same token."""
    route = BrokerRoute(job.brokers)
    step = route.failed()  # the node it was on (the first listed) is gone
    deadline = time.monotonic() + job.deadline_s
    headers = {"Authorization": f"Bearer {device.access_token}"}
    while time.monotonic() < deadline:
        await asyncio.sleep(step.delay_s)
        if step.ask_registry:
            listed = orjson.loads(await http.get("/v1/brokers", headers))
            report.discoveries += 1
            route.replace(listed["brokers"])
        host, port = route.current["host"], int(route.current["port"])
        try:
            async with job.gate, asyncio.timeout(15):
                began = time.monotonic()  # the CONNECT's own time, not its wait for the gate
                conn = await MqttConnection.subscribed(
                    host,
                    port,
                    client_id=device.device_id,
                    username=str(device.user_id),
                    password=device.access_token,
                    keepalive=KEEPALIVE_S,
                    topic=topics.inbox(device.user_id),
                )
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


async def _catch_up(http: HttpPool, headers: dict[str, str], job: DeviceJob, report: DeviceReport) -> None:
    """``GET /v1/sync`` until complete and holding the ``missed`` messages (some may be still committing)."""
    for _ in range(int(job.deadline_s / RETRY_S)):
        began = time.monotonic()
        body = await http.get("/v1/sync", headers)
        report.sync_s.append(time.monotonic() - began)
        report.syncs += 1
        entries = orjson.loads(body)["conversations"]
        held = sum(len(entry["messages"]) for entry in entries)
        if held >= job.missed and all(entry.get("complete", True) for entry in entries):
            return
        await asyncio.sleep(RETRY_S)  # the senders' messages are not all committed yet: ask again
    raise TimeoutError(f"sync never held the {job.missed} missed messages")


async def _device(device: DeviceLogin, job: DeviceJob, http: HttpPool, report: DeviceReport) -> None:
    async with job.gate, asyncio.timeout(30):
        conn = await MqttConnection.subscribed(
            job.host,
            job.port,
            client_id=device.device_id,
            username=str(device.user_id),
            password=device.access_token,
            keepalive=KEEPALIVE_S,
            topic=topics.inbox(device.user_id),
        )
    report.connected += 1
    with contextlib.suppress(Exception):
        for _ in range(1 << 62):
            await conn.read_packets()
    report.dropped_ns.append(time.time_ns())
    conn.close()
    await _reconnect(device, job, http, report)


async def _worker(job: DeviceJob, pipe: Connection) -> None:
    report = DeviceReport()
    job.gate = asyncio.Semaphore(job.concurrency)
    http = HttpPool(job.api_url, job.http_concurrency)
    try:
        tasks = [asyncio.create_task(_device(d, job, http, report)) for d in job.devices]
        for _ in range(int(job.deadline_s * 10)):
            if report.connected + sum(t.done() for t in tasks) >= len(tasks):
                break
            await asyncio.sleep(0.1)
        pipe.send(("ready", report.connected))
        done = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await http.close()
    report.errors = [repr(r) for r in done if isinstance(r, BaseException)]
    pipe.send(("result", report))


def worker_main(job: DeviceJob, pipe: Connection) -> None:
    """A worker process's body: its devices connect, wait for the kill, fail over; the report is piped."""

    async def bounded() -> None:
        async with asyncio.timeout(job.deadline_s * 2):
            await _worker(job, pipe)

    try:
        eventloop.run(bounded())
    except Exception:  # noqa: BLE001 - reported to the parent
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def receive(pipe: Connection, kind: str, timeout: float) -> object:
    """The next message of a worker, which must be of ``kind`` (an ``error`` is raised)."""
    if not pipe.poll(timeout):
        raise RuntimeError(f"failover worker sent no {kind!r} in {timeout} s")
    message = pipe.recv()
    if message[0] != kind:
        raise RuntimeError(f"failover worker: {message[1]}")
    return message[1]


class Sender:
    """One device sending to a conversation (at a steady pace, or a burst), timing each ack."""

    def __init__(self, conn: MqttConnection, conversation_id: int) -> None:
        self.conn = conn
        self.topic = topics.conversation_send(conversation_id)
        self.sent: dict[str, int] = {}
        self.acks: list[tuple[int, int]] = []  # (received ns, sent ns)

    def send_one(self, cmid: str, text: str) -> None:
        """Publish one message now (QoS 1; its ack is counted by ``read``)."""
        self.sent[cmid] = time.time_ns()
        payload = orjson.dumps({"cmid": cmid, "text": text})
        self.conn.writer.write(encode_publish(self.topic, payload, 1, self.conn.next_packet_id()))

    async def send(self, stop: asyncio.Event, every_s: float) -> None:
        """One message every ``every_s`` until ``stop``."""
        for k in range(1 << 62):
            if stop.is_set():
                return
            self.send_one(f"pf-{time.time_ns()}-{k}", "persister failover")
            await asyncio.sleep(every_s)

    async def read(self) -> None:
        """Acknowledge what arrives, and note the acks of what was sent."""
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
