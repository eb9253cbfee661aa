"""What only the NATS side of delivery has: the wire format, the outbox, subscription timing, bad input.

The behaviour both hand-offs share is in ``test_inbox_contract.py``; these use one connection
to one server of the session's cluster, so nothing here waits on route propagation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import pytest
from nats.aio.msg import Msg

from cluster.connection import ClusterConnection, NatsOptions
from cluster.inbox import NatsInboxes
from cluster.node_inbox import NodeDeviceEvents, NodeInbox
from hubbub import subjects
from hubbub.connections import DeviceEvents
from hubbub.sessions import DeviceEnded

BOUND_S = 30.0


@dataclass
class Heard:
    """Messages a plain NATS subscriber received, and a way to wait for a number of them."""

    messages: list[Msg] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, msg: Msg) -> None:
        self.messages.append(msg)
        self.changed.set()

    async def count(self, number: int) -> list[Msg]:
        async with asyncio.timeout(BOUND_S):
            while len(self.messages) < number:
                self.changed.clear()
                await self.changed.wait()
        return self.messages


@dataclass
class Local:
    """The node's MQTT server and core, as far as the node's subscriptions reach them."""

    delivered: list[tuple[int, bytes, str | None, str | None]] = field(default_factory=list)
    ended: list[DeviceEnded] = field(default_factory=list)
    forgotten: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        self.delivered.append((user_id, payload, only_device, skip_device))
        self.changed.set()
        return 1

    async def end_device(self, ended: DeviceEnded) -> None:
        self.ended.append(ended)
        self.changed.set()

    def forget(self, conversation_id: int) -> None:
        self.forgotten.append(conversation_id)
        self.changed.set()

    async def until(self, *, forgotten: int = 0, ended: int = 0) -> None:
        async with asyncio.timeout(BOUND_S):
            while len(self.forgotten) < forgotten or len(self.ended) < ended:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def sender(conn: ClusterConnection) -> AsyncIterator[NatsInboxes]:
    inboxes = NatsInboxes(conn.client)
    yield inboxes
    await inboxes.close()


@pytest.fixture
async def node(conn: ClusterConnection) -> AsyncIterator[tuple[NodeInbox, Local]]:
    """A node on a connection of its own, to the server of ``conn`` (which the sender uses)."""
    server = conn.client.connected_url
    assert server is not None
    own = await ClusterConnection.connect(NatsOptions(servers=(server.geturl(),), name="node"))
    local = Local()
    inbox = NodeInbox(own.client, local, live=local, forget=local.forget)
    await inbox.start()
    yield inbox, local
    await inbox.close()
    await own.close()


def _user(unique: str) -> int:
    return int(unique[:8], 16) * 1000 + 1


async def test_events_keep_their_order_and_carry_headers_only_when_narrowed(
    conn: ClusterConnection, sender: NatsInboxes, unique: str
) -> None:
    user = _user(unique)
    heard = Heard()
    await conn.client.subscribe(subjects.inbox(user), cb=heard.on_message)
    await conn.client.flush()
    for number in range(200):
        sender.to_inbox(user, b"%d" % number)
    sender.to_inbox(user, b"only", only_device="phone")
    sender.to_inbox(user, b"skip", skip_device="laptop")
    messages = await heard.count(202)
    assert [msg.data for msg in messages[:200]] == [b"%d" % number for number in range(200)]
    assert all(not msg.headers for msg in messages[:200])  # a plain event has no header block
    assert messages[200].headers == {subjects.ONLY_DEVICE: "phone"}
    assert messages[201].headers == {subjects.SKIP_DEVICE: "laptop"}
    assert sender.sent == 202
    assert sender.dropped == 0


async def test_a_full_outbox_drops_the_oldest_events_and_counts_them(
    conn: ClusterConnection, unique: str
) -> None:
    user = _user(unique)
    heard = Heard()
    await conn.client.subscribe(subjects.inbox(user), cb=heard.on_message)
    await conn.client.flush()
    small = NatsInboxes(conn.client, outbox_limit=2)
    for number in range(5):  # no await between them: the drainer has not run yet
        small.to_inbox(user, b"%d" % number)
    await small.close()
    assert [msg.data for msg in await heard.count(2)] == [b"3", b"4"]
    assert (small.sent, small.dropped) == (2, 3)


async def test_the_first_device_waits_until_the_server_holds_the_subscription(
    node: tuple[NodeInbox, Local], sender: NatsInboxes, unique: str
) -> None:
    inbox, local = node
    user = _user(unique)
    pending = inbox.device_connected(user, "phone")
    assert pending is not None  # the CONNACK waits for this
    await pending
    sender.to_inbox(user, b"right after", skip_device="laptop")  # no flush of the node in between
    assert inbox.device_connected(user, "laptop") is None  # subscribed already: nothing to wait for
    async with asyncio.timeout(BOUND_S):
        while not local.delivered:
            local.changed.clear()
            await local.changed.wait()
    assert local.delivered == [(user, b"right after", None, "laptop")]
    assert inbox.counts.delivered == 1


async def test_a_device_gone_before_its_subscription_was_made_leaves_none(
    conn: ClusterConnection, node: tuple[NodeInbox, Local], unique: str
) -> None:
    inbox, _ = node
    user = _user(unique)
    pending = inbox.device_connected(user, "phone")
    inbox.device_disconnected(user, "phone")
    assert pending is not None
    await pending
    await inbox.idle()
    assert not inbox.holds(user)
    assert inbox.users == 0
    heard = Heard()
    await conn.client.subscribe(subjects.inbox(user), cb=heard.on_message)
    await conn.client.flush()
    await conn.client.publish(subjects.inbox(user), b"after")
    await heard.count(1)  # the test's own subscription got it: the node's, if any, would have too
    assert inbox.counts.delivered == inbox.counts.stale == 0


async def test_malformed_node_wide_events_are_ignored_and_the_next_ones_handled(
    conn: ClusterConnection, node: tuple[NodeInbox, Local], sender: NatsInboxes
) -> None:
    _, local = node
    await conn.client.publish(subjects.membership_changed(), b"twelve")
    await conn.client.publish(subjects.device_ended(), b'{"user_id": 1}')
    sender.membership_changed(12)
    await sender.end_device(DeviceEnded(7, "phone", "ended"))
    await local.until(forgotten=1, ended=1)
    assert local.forgotten == [12]
    assert local.ended == [DeviceEnded(7, "phone", "ended")]


async def test_the_api_publishes_one_event_per_user(
    conn: ClusterConnection, sender: NatsInboxes, unique: str
) -> None:
    first = _user(unique)
    heard = Heard()
    for user in (first, first + 1, first + 2):
        await conn.client.subscribe(subjects.inbox(user), cb=heard.on_message)
    await conn.client.flush()
    await sender.publish([first, first + 1, first + 2], b"renamed")
    messages = await heard.count(3)
    assert sorted(subjects.parse_inbox(msg.subject) for msg in messages) == [first, first + 1, first + 2]


@dataclass
class Core:
    """``DeviceEvents`` of a core that also asks the CONNACK to wait (``gate``)."""

    gate: asyncio.Future[None]
    log: list[str] = field(default_factory=list)

    def device_connected(self, user_id: int, device_id: str) -> Awaitable[None] | None:
        self.log.append(f"connected {user_id} {device_id}")
        return self.gate

    def device_disconnected(self, user_id: int, device_id: str) -> None:
        self.log.append(f"disconnected {user_id} {device_id}")

    def send(
        self, user_id: int, device_id: str, conversation_id: int, payload: bytes
    ) -> Awaitable[None] | None:
        del payload
        self.log.append(f"send {user_id} {device_id} {conversation_id}")
        return None

    def typing(self, user_id: int, device_id: str, conversation_id: int) -> Awaitable[None] | None:
        self.log.append(f"typing {user_id} {device_id} {conversation_id}")
        return None

    def inbox_subscribed(self, user_id: int, device_id: str) -> None:
        self.log.append(f"inbox {user_id} {device_id}")

    async def presence_snapshot(self, user_id: int) -> bytes:
        return b"%d" % user_id


async def test_node_device_events_wait_for_the_subscription_and_the_core(
    node: tuple[NodeInbox, Local], unique: str
) -> None:
    inbox, _ = node
    user = _user(unique)
    core = Core(asyncio.get_running_loop().create_future())
    events: DeviceEvents = NodeDeviceEvents(core, inbox)
    pending = events.device_connected(user, "phone")
    assert pending is not None
    waiting = asyncio.ensure_future(pending)
    await inbox.idle()  # the subscription is confirmed; the core's part is not done yet
    assert not waiting.done()
    core.gate.set_result(None)
    await waiting
    assert inbox.holds(user)
    assert events.send(user, "phone", 5, b"x") is None
    assert events.typing(user, "phone", 5) is None
    events.inbox_subscribed(user, "phone")
    assert await events.presence_snapshot(user) == b"%d" % user
    events.device_disconnected(user, "phone")
    assert not inbox.holds(user)
    assert core.log == [
        f"connected {user} phone",
        f"send {user} phone 5",
        f"typing {user} phone 5",
        f"inbox {user} phone",
        f"disconnected {user} phone",
    ]


async def test_a_burst_of_first_devices_is_subscribed_and_confirmed_together(
    node: tuple[NodeInbox, Local], sender: NatsInboxes, unique: str
) -> None:
    """As when a dead node's devices all reconnect here: every CONNACK waits, none is lost."""
    inbox, local = node
    users = [_user(unique) + offset for offset in range(50)]
    pending = [inbox.device_connected(user, f"device-{user}") for user in users]
    assert all(waiting is not None for waiting in pending)
    await asyncio.gather(*(waiting for waiting in pending if waiting is not None))
    assert inbox.counts.unconfirmed == 0
    for user in users:
        sender.to_inbox(user, b"welcome back")
    async with asyncio.timeout(BOUND_S):
        while len(local.delivered) < len(users):
            local.changed.clear()
            await local.changed.wait()
    assert sorted(user for user, *_ in local.delivered) == users
