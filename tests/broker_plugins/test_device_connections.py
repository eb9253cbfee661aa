"""The broker's side of hubbub/connections.py, on a real server in this process with real sockets.

The broker reports devices to ``DeviceEvents`` (here a recorder) and is driven through
``DeviceConnections``: ``to_inbox``, ``set_presence``, ``is_connected``, ``drop``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import orjson
import pytest

from broker_plugins import BrokerOptions, HubbubBroker
from broker_plugins.codec import parse_publish
from hubbub.connections import DeviceConnections, DeviceEvents
from hubbub.tokens import TokenCodec
from tests.messaging.doubles import FakeDeviceSessions, FakeDirectory
from tests.support.wire import PacketReader, connect_packet, remaining_length, subscribe_packet

USER = 7


@dataclass
class Recorder:
    """``DeviceEvents`` that remembers what the broker reported."""

    log: list[tuple[str, int, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Future[None] | None = None  # what ``device_connected`` asks the broker to wait for

    def _note(self, what: str, user_id: int, device_id: str) -> None:
        self.log.append((what, user_id, device_id))
        self.changed.set()

    def device_connected(self, user_id: int, device_id: str) -> Awaitable[None] | None:
        self._note("connected", user_id, device_id)
        return self.gate

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        self._note("disconnected", user_id, device_id)

    def send(
        self, user_id: int, device_id: str, conversation_id: int, payload: bytes
    ) -> Awaitable[None] | None:
        self._note(f"send {conversation_id} {payload.decode()}", user_id, device_id)
        return None

    def typing(self, user_id: int, device_id: str, conversation_id: int) -> Awaitable[None] | None:
        self._note(f"typing {conversation_id}", user_id, device_id)
        return None

    def inbox_subscribed(self, user_id: int, device_id: str) -> None:
        self._note("inbox", user_id, device_id)

    async def presence_snapshot(self, user_id: int) -> bytes:
        return orjson.dumps({"user_id": str(user_id), "status": "offline"})

    async def wait_for(self, entry: tuple[str, int, str], times: int = 1) -> None:
        while self.log.count(entry) < times:
            self.changed.clear()
            await self.changed.wait()


@dataclass
class Broker:
    server: HubbubBroker
    events: Recorder
    tokens: TokenCodec
    devices: FakeDeviceSessions
    clients: list[asyncio.StreamWriter] = field(default_factory=list)


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    tokens = TokenCodec("s" * 48, access_ttl_s=60)
    server = HubbubBroker(
        BrokerOptions(bind="127.0.0.1", mqtt_port=0, max_packet_bytes=1 << 20, connect_timeout_s=5),
        tokens=tokens,
        relations=FakeDirectory(),
        devices=(devices := FakeDeviceSessions()),
    )
    events = Recorder()
    _: tuple[DeviceConnections, DeviceEvents] = (server, events)
    await server.start(events)
    made = Broker(server, events, tokens, devices)
    try:
        yield made
    finally:
        for writer in made.clients:
            writer.close()
            await writer.wait_closed()
        await server.shutdown()


class Device:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer, self._packets = writer, PacketReader(reader)

    async def packet(self) -> tuple[int, bytes]:
        """The next packet: (first byte, body)."""
        packet = await self._packets.packet()
        if packet is None:
            raise EOFError
        return packet

    async def subscribe(self, topic: str) -> bytes:
        self.writer.write(subscribe_packet(topic))
        first, suback = await self.packet()
        assert first == 0x90
        return suback[2:]


async def _send_connect(broker: Broker, device_id: str, *, clean: bool = True) -> Device:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.server.mqtt_port)
    broker.clients.append(writer)
    token = broker.tokens.issue_access(USER, device_id)
    packet = connect_packet(device_id, str(USER), token)
    if not clean:  # the same CONNECT with the clean session flag cleared
        packet = packet.replace(bytes([4, 0b11000010]), bytes([4, 0b11000000]), 1)
    writer.write(packet)
    return Device(reader, writer)


async def _connect(broker: Broker, device_id: str) -> Device:
    device = await _send_connect(broker, device_id)
    assert await device.packet() == (0x20, b"\x00\x00")
    return device


async def test_connects_and_disconnects_are_reported(broker: Broker) -> None:
    phone = await _connect(broker, "phone")
    assert broker.events.log == [("connected", USER, "phone")]
    assert broker.server.is_connected("phone")
    phone.writer.write(b"\xe0\x00")  # DISCONNECT
    await broker.events.wait_for(("disconnected", USER, "phone"))
    assert not broker.server.is_connected("phone")


async def test_to_inbox_reaches_the_chosen_devices_and_counts_them(broker: Broker) -> None:
    phone, laptop = await _connect(broker, "phone"), await _connect(broker, "laptop")
    inbox = f"user/{USER}/inbox"
    assert await phone.subscribe(inbox) == b"\x01"
    assert await laptop.subscribe(inbox) == b"\x01"
    assert broker.server.to_inbox(USER, b"all") == 2
    assert broker.server.to_inbox(USER, b"but-phone", skip_device="phone") == 1
    assert broker.server.to_inbox(USER, b"phone-only", only_device="phone") == 1
    assert broker.server.to_inbox(USER + 1, b"nobody") == 0
    for device, expected in ((phone, [b"all", b"phone-only"]), (laptop, [b"all", b"but-phone"])):
        received = []
        for _ in expected:
            first, body = await device.packet()
            received.append(parse_publish(first & 0x0F, body)[2])
        assert received == expected
    assert ("inbox", USER, "phone") in broker.events.log


async def test_set_presence_is_retained_for_later_subscribers(broker: Broker) -> None:
    broker.server.set_presence(USER, b'{"status":"online"}')
    phone = await _connect(broker, "phone")
    assert await phone.subscribe(f"presence/{USER}") == b"\x01"
    first, body = await phone.packet()
    assert first & 0x01  # retained
    assert parse_publish(first & 0x0F, body)[::2] == (f"presence/{USER}", b'{"status":"online"}')


async def test_a_presence_topic_without_state_asks_the_core(broker: Broker) -> None:
    phone = await _connect(broker, "phone")
    assert await phone.subscribe(f"presence/{USER}") == b"\x01"
    first, body = await phone.packet()
    assert orjson.loads(parse_publish(first & 0x0F, body)[2])["status"] == "offline"


async def test_drop_closes_a_device_connection(broker: Broker) -> None:
    phone = await _connect(broker, "phone")
    broker.server.drop("phone")
    with pytest.raises(EOFError):
        await phone.packet()
    await broker.events.wait_for(("disconnected", USER, "phone"))
    assert not broker.server.is_connected("phone")
    broker.server.drop("phone")  # no connection: nothing to do


async def test_device_publishes_go_to_the_core_and_nowhere_else(broker: Broker) -> None:
    phone = await _connect(broker, "phone")
    for topic in ("conv/5/send", "conv/5/typing", "user/8/inbox"):
        body = struct.pack("!H", len(topic)) + topic.encode() + b"hi"
        phone.writer.write(b"\x30" + remaining_length(len(body)) + body)
    await broker.events.wait_for(("typing 5", USER, "phone"))
    assert [entry[0] for entry in broker.events.log] == ["connected", "send 5 hi", "typing 5"]


async def test_a_signed_out_device_is_refused_at_connect_whatever_its_token(broker: Broker) -> None:
    broker.devices.ended.add("stolen")
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.server.mqtt_port)
    broker.clients.append(writer)
    writer.write(connect_packet("stolen", str(USER), broker.tokens.issue_access(USER, "stolen")))
    device = Device(reader, writer)
    assert await device.packet() == (0x20, b"\x00\x05")  # CONNACK: not authorized
    with pytest.raises(EOFError):
        await device.packet()
    assert broker.events.log == []


@pytest.mark.parametrize("topic", ["conv/abc/send", "conv//send", "conv/1/other", "conv/01/send", "conv/5"])
async def test_a_send_to_a_malformed_conversation_topic_gets_an_error_event(
    broker: Broker, topic: str
) -> None:
    phone = await _connect(broker, "phone")
    assert await phone.subscribe(f"user/{USER}/inbox") == b"\x01"
    body = struct.pack("!H", len(topic)) + topic.encode() + b"\x00\x09" + b'{"cmid":"c1","text":"hi"}'
    phone.writer.write(b"\x32" + remaining_length(len(body)) + body)  # QoS 1
    received = dict([await phone.packet(), await phone.packet()])  # the error event, the PUBACK
    assert received[0x40] == b"\x00\x09"
    inbox_topic, _, payload = parse_publish(0x02, received[0x32])
    event = orjson.loads(payload)
    assert inbox_topic == f"user/{USER}/inbox"
    assert (event["kind"], event["code"], event["conversation_id"]) == ("error", "invalid", None)
    assert "not a conversation topic" in event["message"]
    assert not any(entry[0].startswith("send") for entry in broker.events.log)


async def test_the_connack_waits_for_what_the_core_asks_to_wait_for(broker: Broker) -> None:
    """A cluster node subscribes to the user's inbox first: CONNACK (and the device's catch-up) after."""
    broker.events.gate = gate = asyncio.get_running_loop().create_future()
    pending = asyncio.ensure_future(_connect(broker, "phone"))
    await broker.events.wait_for(("connected", USER, "phone"))
    assert not broker.server.is_connected("phone")  # reported, not yet acknowledged
    assert not pending.done()
    gate.set_result(None)
    phone = await pending
    assert broker.server.is_connected("phone")
    assert await phone.subscribe(f"user/{USER}/inbox") == b"\x01"
    assert broker.server.to_inbox(USER, b"hello") == 1


async def test_a_failed_connect_report_closes_the_connection_and_reports_it_gone(broker: Broker) -> None:
    broker.events.gate = gate = asyncio.get_running_loop().create_future()
    gate.set_exception(RuntimeError("no inbox subscription"))
    phone = await _send_connect(broker, "phone")
    with pytest.raises(EOFError):
        await phone.packet()  # closed without CONNACK
    await broker.events.wait_for(("disconnected", USER, "phone"))
    assert "phone" not in broker.server.sessions


async def test_a_device_ended_while_its_connack_waits_gets_no_connack(broker: Broker) -> None:
    """Signed out after its signed-in check passed, before the cluster node's inbox subscription."""
    broker.events.gate = gate = asyncio.get_running_loop().create_future()
    phone = await _send_connect(broker, "phone")
    await broker.events.wait_for(("connected", USER, "phone"))
    broker.server.drop("phone")
    gate.set_result(None)
    with pytest.raises(EOFError):
        await phone.packet()  # closed without CONNACK
    await broker.events.wait_for(("disconnected", USER, "phone"))
    assert "phone" not in broker.server.sessions


async def test_a_persistent_session_keeps_what_was_routed_while_its_connack_waited(broker: Broker) -> None:
    inbox = f"user/{USER}/inbox"
    phone = await _send_connect(broker, "phone", clean=False)
    assert await phone.packet() == (0x20, b"\x00\x00")
    assert await phone.subscribe(inbox) == b"\x01"
    phone.writer.write(b"\xe0\x00")  # DISCONNECT: the session stays
    await broker.events.wait_for(("disconnected", USER, "phone"))
    broker.events.gate = gate = asyncio.get_running_loop().create_future()
    again = await _send_connect(broker, "phone", clean=False)
    await broker.events.wait_for(("connected", USER, "phone"), times=2)
    assert broker.server.to_inbox(USER, b"meanwhile") == 0  # queued for the session, not sent
    gate.set_result(None)
    assert await again.packet() == (0x20, b"\x01\x00")  # session present
    first, body = await again.packet()
    assert parse_publish(first & 0x0F, body)[::2] == (inbox, b"meanwhile")
