"""Load-generator worker for the pipeline scenarios: devices that send chat messages and read their inbox.

Each device connects as its user (JWT), subscribes to ``user/{uid}/inbox`` at QoS 1 and,
if it is a sender, publishes ``{"cmid", "text"}`` at QoS 1 to its conversation. The text
carries the send time, so a receiver measures send-to-receive latency across processes
from the one wall clock. Closed loop: each sender keeps ``window`` messages not yet
acknowledged by an ``ack`` event (which the platform sends only after the commit). Open
loop: the worker's senders together send ``rate`` messages a second, whatever comes back.
The receive path only searches bytes (no JSON decoding) so the generator stays cheap.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench import eventloop
from bench.loadgen import NS
from bench.mqtt_wire import PUBLISH, MqttConnection, encode_publish, publish_payload_offset
from hubbub import topics

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["ChatDevice", "ChatJob", "ChatReport", "chat_worker_main"]

_MESSAGE = b'{"kind":"message"'
_ACK = b'{"kind":"ack"'
_TEXT = b'"text":"t'
_SENDER = b'"sender_id":"'
MAX_SAMPLES = 2_000_000


@dataclass(frozen=True)
class ChatDevice:
    """One device: its login, and the conversation it sends to (0: it only receives)."""

    user_id: int
    device_id: str
    token: str
    conversation_id: int


@dataclass(frozen=True)
class ChatJob:
    """What one worker does."""

    host: str
    port: int
    devices: list[ChatDevice]
    duration: float
    warmup: float
    window: int = 0  # closed loop: unacknowledged messages per sender
    rate: float = 0.0  # open loop: messages a second from this worker (when window is 0)
    connect_concurrency: int = 50
    keepalive: int = 300


@dataclass
class ChatReport:
    """A worker's results."""

    connected: int = 0
    connect_seconds: float = 0.0
    sent: int = 0
    acked: int = 0
    delivered_window: int = 0  # message events received by a device other than the sender's
    delivered_total: int = 0
    latencies_us: bytes = b""
    errors: list[str] = field(default_factory=list)


class _Device:
    def __init__(self, spec: ChatDevice, conn: MqttConnection) -> None:
        self.spec = spec
        self.conn = conn
        self.sender = str(spec.user_id).encode()
        self.topic = topics.conversation_send(spec.conversation_id)
        self.unacked = 0
        self.seq = 0
        self.run = ""  # makes cmids unique across runs: a reused cmid is a resend, answered by ack only


class _Stats:
    def __init__(self) -> None:
        self.window_start = self.window_end = 1 << 62
        self.delivered_window = self.delivered_total = self.acked = 0
        self.latencies = array("q")


def _send(device: _Device, now_ns: int) -> None:
    device.seq += 1
    cmid = f"{device.run}{device.spec.device_id}-{device.seq}"
    payload = b'{"cmid":"' + cmid.encode() + b'","text":"t' + str(now_ns).encode() + b'"}'
    device.conn.writer.write(encode_publish(device.topic, payload, 1, device.conn.next_packet_id()))
    device.unacked += 1


async def _read(  # noqa: C901 - one flat dispatch over the inbox events
    device: _Device, stats: _Stats, window: int
) -> None:
    conn = device.conn
    for _ in range(1 << 62):
        packets = await conn.read_packets()
        now = time.time_ns()
        for packet in packets:
            if packet.ptype != PUBLISH:
                continue
            start = publish_payload_offset(packet.flags, packet.body)
            if packet.flags & 0x06:
                conn.puback(int.from_bytes(packet.body[start - 2 : start]))
            body = packet.body
            if body.startswith(_ACK, start):
                device.unacked -= 1
                stats.acked += 1
                if window and device.unacked < window:
                    _send(device, now)
            elif body.startswith(_MESSAGE, start):
                at = body.find(_SENDER, start)
                if body.startswith(device.sender + b'"', at + len(_SENDER)):
                    continue  # our own message echoed to our inbox: not a delivery to a recipient
                stats.delivered_total += 1
                if stats.window_start <= now < stats.window_end:
                    stats.delivered_window += 1
                    text = body.find(_TEXT, start)
                    if text >= 0 and len(stats.latencies) < MAX_SAMPLES:
                        digits = body[text + len(_TEXT) : body.index(b'"', text + len(_TEXT))]
                        stats.latencies.append((now - int(digits)) // 1000)


async def _connect(job: ChatJob, report: ChatReport) -> list[_Device]:
    sem = asyncio.Semaphore(job.connect_concurrency)
    devices: list[_Device] = []

    async def one(spec: ChatDevice) -> None:
        async with sem, asyncio.timeout(30):
            conn = await MqttConnection.subscribed(
                job.host,
                job.port,
                client_id=spec.device_id,
                username=str(spec.user_id),
                password=spec.token,
                keepalive=job.keepalive,
                topic=topics.inbox(spec.user_id),
            )
            devices.append(_Device(spec, conn))

    started = time.perf_counter()
    results = await asyncio.gather(*(one(spec) for spec in job.devices), return_exceptions=True)
    report.errors.extend(repr(r) for r in results if isinstance(r, BaseException))
    report.connect_seconds = time.perf_counter() - started
    report.connected = len(devices)
    return devices


async def _open_loop(senders: list[_Device], job: ChatJob, start_ns: int, end_ns: int) -> None:
    """Send ``rate`` messages a second round-robin over the senders, caught up every 5 ms tick."""
    tick = 0.005
    sent = 0
    for _ in range(int(job.duration / tick) * 4 + 1):
        now = time.time_ns()
        if now >= end_ns:
            return
        due = int(job.rate * (now - start_ns) / NS)
        for _ in range(due - sent):
            _send(senders[sent % len(senders)], now)
            sent += 1
        await asyncio.sleep(tick)


async def _run(job: ChatJob, pipe: Connection) -> None:
    report = ChatReport()
    stats = _Stats()
    devices = await _connect(job, report)
    readers = [asyncio.create_task(_read(d, stats, job.window)) for d in devices]
    try:
        pipe.send(("ready", report))
        message = await asyncio.to_thread(pipe.recv)
        start_ns = int(message[1])
        for device in devices:
            device.run = f"{start_ns % 1_000_000_000:x}-"
        stats.window_start = start_ns + int(job.warmup * NS)
        stats.window_end = start_ns + int(job.duration * NS)
        await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / NS))
        senders = [d for d in devices if d.spec.conversation_id]
        if job.window:
            for device in senders:
                for _ in range(job.window):
                    _send(device, time.time_ns())
            await asyncio.sleep(max(0.0, (stats.window_end - time.time_ns()) / NS))
        elif senders:
            await _open_loop(senders, job, start_ns, stats.window_end)
        await asyncio.sleep(1.0)  # late deliveries of the window still count in the totals
        report.sent = sum(d.seq for d in senders)
        report.acked = stats.acked
        report.delivered_window, report.delivered_total = stats.delivered_window, stats.delivered_total
        report.latencies_us = stats.latencies.tobytes()
        pipe.send(("result", report))
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(d.conn.disconnect() for d in devices), return_exceptions=True)


def chat_worker_main(job: ChatJob, pipe: Connection) -> None:
    """Process entry point; any failure goes back as ("error", traceback)."""

    async def bounded() -> None:
        async with asyncio.timeout(job.duration + 300):
            await _run(job, pipe)

    try:
        eventloop.run(bounded())
    except Exception:  # noqa: BLE001 - reported to the parent
        sys.stderr.write(traceback.format_exc())
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()
