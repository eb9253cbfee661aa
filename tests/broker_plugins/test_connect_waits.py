"""A CONNECT that waits: for the account store's answer, then (a cluster node) for the core.

The broker waits for the store's answer with a callback on it, not a task, and for the core's
``device_connected`` (a cluster node's inbox subscription) with a task chained to the
connection's step. Here the store and the core are doubles whose answers the test releases, so
each outcome is played out in order: the store failing, the connection ending while the store
is asked (a shutdown), and the CONNACK held until the core is ready, or dropped with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import pytest

from broker_plugins import BrokerOptions, HubbubBroker
from hubbub import topics
from hubbub.sessions import DeviceSessions
from hubbub.tokens import TokenCodec
from tests.messaging.doubles import FakeDirectory, QuietEvents
from tests.support.wire import PacketReader, connect_packet, subscribe_packet

USER = 7
CONNACK_ACCEPTED = (0x20, b"\x00\x00")


@dataclass
class HeldStore:
    """The account store: each question is a future the test answers (``asked`` tells when)."""

    questions: list[asyncio.Future[bool]] = field(default_factory=list)
    asked: asyncio.Event = field(default_factory=asyncio.Event)

    def is_signed_in(self, user_id: int, device_id: str) -> asyncio.Future[bool]:
        del user_id, device_id
        question: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.questions.append(question)
        self.asked.set()
        return question

    async def next_question(self) -> asyncio.Future[bool]:
        await self.asked.wait()
        self.asked.clear()
        return self.questions[-1]


@dataclass
class HeldCore(QuietEvents):
    """``DeviceEvents`` whose ``device_connected`` returns a future the test completes (a cluster node)."""

    ready: list[asyncio.Future[None]] = field(default_factory=list)
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: list[str] = field(default_factory=list)

    def device_connected(self, user_id: int, device_id: str) -> Awaitable[None] | None:
        del user_id, device_id
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready.append(ready)
        self.reported.set()
        return ready

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        del user_id
        self.disconnected.append(device_id)


@dataclass
class Server:
    broker: HubbubBroker
    store: HeldStore
    core: HeldCore
    tokens: TokenCodec

    async def connect(self, device_id: str) -> tuple[PacketReader, asyncio.StreamWriter]:
        """A client that sent its CONNECT as ``device_id`` of ``USER``."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.broker.mqtt_port)
        writer.write(connect_packet(device_id, str(USER), self.tokens.issue_access(USER, device_id)))
        return PacketReader(reader), writer


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    tokens = TokenCodec("s" * 48, access_ttl_s=60)
    store = HeldStore()
    _: DeviceSessions = store
    broker = HubbubBroker(
        BrokerOptions(bind="127.0.0.1", mqtt_port=0, max_packet_bytes=1 << 20, connect_timeout_s=30),
        tokens=tokens,
        relations=FakeDirectory(),
        devices=store,
    )
    core = HeldCore()
    await broker.start(core)
    try:
        yield Server(broker, store, core, tokens)
    finally:
        await broker.shutdown()


async def test_a_failing_store_closes_the_connection_and_the_next_connect_asks_again(server: Server) -> None:
    packets, writer = await server.connect("phone")
    (await server.store.next_question()).set_exception(OSError("the store is down"))
    assert await packets.packet() is None  # closed without a CONNACK
    writer.close()
    packets, writer = await server.connect("phone")
    (await server.store.next_question()).set_result(True)
    (await _reported(server)).set_result(None)
    assert await packets.packet() == CONNACK_ACCEPTED
    writer.close()


async def test_the_connack_waits_for_the_core_after_the_store_said_yes(server: Server) -> None:
    packets, writer = await server.connect("phone")
    (await server.store.next_question()).set_result(True)
    ready = await _reported(server)
    assert not server.broker.is_connected("phone")  # reported, but not accepted before the core is ready
    ready.set_result(None)
    assert await packets.packet() == CONNACK_ACCEPTED
    assert server.broker.is_connected("phone")
    writer.close()


async def test_a_shutdown_while_the_store_is_asked_ends_the_connect_and_a_late_answer_changes_nothing(
    server: Server,
) -> None:
    packets, writer = await server.connect("phone")
    question = await server.store.next_question()
    await server.broker.shutdown()
    assert await packets.packet() is None
    after_the_broker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    question.add_done_callback(lambda _: after_the_broker.set_result(None))  # runs after the broker's
    question.set_result(True)
    await after_the_broker  # the broker's callback ran: it must have found the CONNECT ended
    assert server.core.ready == []  # never reported
    assert not server.broker.is_connected("phone")
    writer.close()


async def test_a_shutdown_while_the_core_is_waited_for_stops_waiting(server: Server) -> None:
    packets, writer = await server.connect("phone")
    (await server.store.next_question()).set_result(True)
    ready = await _reported(server)
    await server.broker.shutdown()
    assert await packets.packet() is None
    assert ready.cancelled()  # the inbox subscription is no longer waited for
    assert server.core.disconnected == []  # a shutdown is not the device going offline
    writer.close()


async def test_a_subscribe_sent_behind_a_waiting_connect_is_answered_once_it_is_accepted(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    # Both wait: the CONNECT for the store and the core, then the SUBSCRIBE of a presence topic
    # with nothing retained for the core's snapshot, a step begun as the CONNECT's ends.
    packets, writer = await server.connect("phone")
    writer.write(subscribe_packet(topics.presence(USER)))
    (await server.store.next_question()).set_result(True)
    (await _reported(server)).set_result(None)
    assert await packets.packet() == CONNACK_ACCEPTED
    assert await packets.packet() == (0x90, b"\x00\x01\x01")  # SUBACK, QoS 1 granted
    retained = await packets.packet()
    assert retained is not None
    assert retained[0] & 0xF0 == 0x30  # the snapshot, retained
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    writer.close()


async def _reported(server: Server) -> asyncio.Future[None]:
    """The core's future for the device just reported connected."""
    await server.core.reported.wait()
    server.core.reported.clear()
    return server.core.ready[-1]
