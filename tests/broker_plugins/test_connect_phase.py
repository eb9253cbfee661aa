"""The CONNECT phase on a real server with real sockets, a remembered device and an ended one.

The handler frames the CONNECT; the broker answers it without the store for a device remembered
as signed in (``SignedInDevices.remembers``, within the turn that read it), and never lets in
one that was ended. Anything else waits for the store. Either way the CONNECT may arrive in
pieces, and packets sent right behind it are handled after its CONNACK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import pytest

from broker_plugins import BrokerOptions, HubbubBroker
from hubbub.sessions import DeviceSessions, SignedInDevices
from hubbub.tokens import TokenCodec
from tests.messaging.doubles import FakeDirectory, QuietEvents
from tests.support.wire import PacketReader, connect_packet, subscribe_packet

USER = 7
CONNACK_ACCEPTED = (0x20, b"\x00\x00")
CONNACK_NOT_AUTHORIZED = (0x20, b"\x00\x05")


@dataclass
class CountingStore:
    """The account store: every device is signed in but the ``ended`` ones; counts the questions."""

    ended: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    async def is_signed_in(self, user_id: int, device_id: str) -> bool:
        del user_id
        self.asked.append(device_id)
        return device_id not in self.ended


@dataclass
class Events(QuietEvents):
    """``DeviceEvents`` reduced to what the CONNECT phase reports; the rest does nothing."""

    connected: list[str] = field(default_factory=list)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    def device_connected(self, user_id: int, device_id: str) -> Awaitable[None] | None:
        del user_id
        self.connected.append(device_id)
        return None

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        del user_id, device_id
        self.gone.set()


@dataclass
class Server:
    broker: HubbubBroker
    store: CountingStore
    signed_in: SignedInDevices
    events: Events
    tokens: TokenCodec


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    tokens = TokenCodec("s" * 48, access_ttl_s=60)
    store = CountingStore()
    signed_in = SignedInDevices(store)
    _: DeviceSessions = store
    broker = HubbubBroker(
        BrokerOptions(bind="127.0.0.1", mqtt_port=0, max_packet_bytes=1 << 20, connect_timeout_s=1),
        tokens=tokens,
        relations=FakeDirectory(),
        devices=signed_in,
    )
    events = Events()
    await broker.start(events)
    try:
        yield Server(broker, store, signed_in, events, tokens)
    finally:
        await broker.shutdown()


class Client:
    """A raw MQTT client socket reading whole packets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer, self._packets = writer, PacketReader(reader)

    @classmethod
    async def open(cls, server: Server) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.broker.mqtt_port)
        return cls(reader, writer)

    async def packet(self) -> tuple[int, bytes] | None:
        """The next packet (first byte, body), or ``None`` once the broker closed the connection."""
        return await self._packets.packet()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _connect(server: Server, device_id: str) -> bytes:
    return connect_packet(device_id, str(USER), server.tokens.issue_access(USER, device_id))


async def _connect_and_leave(server: Server, device_id: str) -> tuple[int, bytes] | None:
    client = await Client.open(server)
    client.writer.write(_connect(server, device_id))
    answer = await client.packet()
    server.events.gone.clear()
    await client.close()
    if answer == CONNACK_ACCEPTED:
        await server.events.gone.wait()  # its session is gone: the next CONNECT starts afresh
    return answer


async def test_a_remembered_device_reconnects_without_asking_the_store(server: Server) -> None:
    assert await _connect_and_leave(server, "phone") == CONNACK_ACCEPTED
    assert await _connect_and_leave(server, "phone") == CONNACK_ACCEPTED
    assert server.store.asked == ["phone"]
    assert server.events.connected == ["phone", "phone"]


async def test_an_ended_device_is_refused_though_it_was_remembered(server: Server) -> None:
    assert await _connect_and_leave(server, "phone") == CONNACK_ACCEPTED
    server.store.ended.add("phone")
    server.signed_in.forget("phone")  # what the API's DeviceEnded does on this node
    assert await _connect_and_leave(server, "phone") == CONNACK_NOT_AUTHORIZED
    assert server.store.asked == ["phone", "phone"]
    assert server.events.connected == ["phone"]


@pytest.mark.parametrize("remembered", [False, True], ids=["store asked", "remembered"])
async def test_a_connect_in_pieces_with_a_subscribe_behind_it_gets_connack_then_suback(
    server: Server, remembered: bool
) -> None:
    if remembered:
        assert await _connect_and_leave(server, "phone") == CONNACK_ACCEPTED
    client = await Client.open(server)
    data = _connect(server, "phone") + subscribe_packet(f"user/{USER}/inbox")
    for at in range(0, len(data), 7):  # the CONNECT arrives in pieces, the SUBSCRIBE right behind it
        client.writer.write(data[at : at + 7])
        await client.writer.drain()
    assert await client.packet() == CONNACK_ACCEPTED
    assert await client.packet() == (0x90, b"\x00\x01\x01")
    await client.close()


async def test_a_first_packet_that_is_not_a_connect_closes_the_connection(server: Server) -> None:
    client = await Client.open(server)
    client.writer.write(b"\xc0\x00")  # PINGREQ
    assert await client.packet() is None
    await client.close()


async def test_a_connection_that_sends_no_connect_is_closed_after_the_connect_timeout(server: Server) -> None:
    client = await Client.open(server)
    client.writer.write(_connect(server, "phone")[:5])  # never completed
    assert await client.packet() is None  # closed by the broker, not by this test
    await client.close()
    assert server.store.asked == []
