"""What an accepted connection costs at rest, and that serving it without a task keeps packet order.

The broker serves each connection with its handler as an ``asyncio.Protocol``: once the
CONNACK is out, a connection holds no task, and packets that must be waited for (a
SUBSCRIBE's ACL lookup) pause reading instead of running ahead of the packets after them.
A real broker in this process, real sockets.
"""

from __future__ import annotations

import asyncio
import struct

from tests.broker_plugins.test_device_connections import USER, Broker, Device
from tests.support.wire import connect_packet, remaining_length

PINGREQ, PINGRESP = b"\xc0\x00", (0xD0, b"")
DISCONNECT = b"\xe0\x00"


def _subscribe(topic: str, packet_id: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + struct.pack("!H", len(topic)) + topic.encode() + b"\x01"
    return b"\x82" + remaining_length(len(body)) + body


async def _open(broker: Broker, device_id: str, *after_connect: bytes, keepalive: int = 30) -> Device:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.server.mqtt_port)
    broker.clients.append(writer)
    token = broker.tokens.issue_access(USER, device_id)
    writer.write(b"".join([connect_packet(device_id, str(USER), token, keepalive), *after_connect]))
    return Device(reader, writer)


async def _subscribed(broker: Broker, device_id: str) -> Device:
    device = await _open(broker, device_id, _subscribe(f"user/{USER}/inbox"))
    assert await device.packet() == (0x20, b"\x00\x00")
    assert await device.packet() == (0x90, b"\x00\x01\x01")
    return device


async def test_idle_connections_hold_no_task(broker: Broker) -> None:
    await _subscribed(broker, "phone-0")
    tasks = len(asyncio.all_tasks())
    for index in range(1, 21):
        await _subscribed(broker, f"phone-{index}")
    assert len(asyncio.all_tasks()) == tasks
    assert broker.server.to_inbox(USER, b"still served") == 21


async def test_packets_sent_with_the_connect_are_handled_in_order_after_the_connack(broker: Broker) -> None:
    # The SUBSCRIBE waits for its ACL lookup: the PINGREQ behind it must not overtake it.
    phone = await _open(
        broker, "phone", _subscribe(f"user/{USER}/inbox"), PINGREQ, _subscribe("user/9/inbox", 2)
    )
    assert await phone.packet() == (0x20, b"\x00\x00")
    assert await phone.packet() == (0x90, b"\x00\x01\x01")
    assert await phone.packet() == PINGRESP
    assert await phone.packet() == (0x90, b"\x00\x02\x80")  # another user's inbox: refused
    await broker.events.wait_for(("inbox", USER, "phone"))


async def test_packets_after_one_that_waits_are_handled_once_it_is_done(broker: Broker) -> None:
    phone = await _subscribed(broker, "phone")
    phone.writer.write(_subscribe(f"user/{USER}/inbox", 7) + PINGREQ + _subscribe("presence/7", 8) + PINGREQ)
    received = [await phone.packet() for _ in range(5)]
    retained_presence = received.pop(3)  # sent right after its SUBACK
    assert retained_presence[0] == 0x31  # PUBLISH, QoS 0, retained
    assert received == [(0x90, b"\x00\x07\x01"), PINGRESP, (0x90, b"\x00\x08\x01"), PINGRESP]


async def test_ended_connections_leave_nothing_behind(broker: Broker) -> None:
    devices = [await _subscribed(broker, f"phone-{index}") for index in range(3)]
    silent = await _open(broker, "silent", keepalive=1)
    assert await silent.packet() == (0x20, b"\x00\x00")
    assert len(broker.server.keepalive) == 4
    for device in devices:
        device.writer.write(DISCONNECT)
    await broker.events.wait_for(("disconnected", USER, "silent"))  # its keepalive expired meanwhile
    for index in range(3):
        await broker.events.wait_for(("disconnected", USER, f"phone-{index}"))
    assert len(broker.server.keepalive) == 0
    assert broker.server.sessions == {}
    assert len(broker.server.index) == 0
