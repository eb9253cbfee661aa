"""Delivery to devices, one contract for both hand-offs: in one process, and across nodes over NATS.

In process (``hubbub up``): one node, whose MQTT server (here ``LocalDevices``) is what the core
and the fan-out deliver to, and the core is what the API publishes through. Over NATS: two broker
nodes (each a messaging core, ``NodeConnections``, ``NodeInbox`` and ``NodeDeviceEvents`` on its
own connection to its own server of the session's 3-server cluster), and a sender (the persister's
or the API's ``NatsInboxes``) on the third server. Devices are spread over the nodes there is.

"Gets nothing" is checked by counting what reached a node's MQTT server after a barrier
(``settle``: a probe event and a probe membership change from the sender, seen by every node,
which the NATS client hands over in the order they arrived), and by the node's subscriptions
as the NATS server lists them, never by waiting a while.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client

from cluster.connection import ClusterConnection, NatsOptions
from cluster.inbox import NatsInboxes
from cluster.node_inbox import NodeConnections, NodeDeviceEvents, NodeInbox
from hubbub import subjects
from hubbub.connections import DeviceConnections, DeviceEvents, Inboxes
from hubbub.ids import SnowflakeGenerator
from hubbub.sessions import DeviceEnded, LiveConnections
from hubbub.stores import InboxPublisher
from messaging import IngestLimits, MessagingCore
from persister.local_log import LocalAcceptedLog
from tests.messaging.doubles import FakeDirectory, ManualClock
from tests.support.nats import NatsCluster, NatsServer

BOUND_S = 30.0  # the whole wait of a test, on a loaded machine: generous, never a measurement
_POLL_S = 0.02  # polling a NATS server's monitoring endpoint (its state, not a test's timing)
LIMITS = IngestLimits(max_chars=200, sends_per_second=100.0, send_burst=100, membership_ttl_s=300.0)


@dataclass
class LocalDevices:
    """A node's MQTT server as ``DeviceConnections``: who is connected, what each device received."""

    changed: asyncio.Event
    users: dict[str, int] = field(default_factory=dict)  # connected device -> its user
    received: dict[str, list[bytes]] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)  # the user of every to_inbox, reached or not
    gone: Callable[[int, str], None] | None = None  # the server reports a dropped device

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        self.calls.append(user_id)
        reached = [
            device
            for device, owner in self.users.items()
            if owner == user_id and device != skip_device and only_device in {None, device}
        ]
        for device in reached:
            self.received.setdefault(device, []).append(payload)
        self.changed.set()
        return len(reached)

    def set_presence(self, user_id: int, payload: bytes) -> None:
        del user_id, payload

    def is_connected(self, device_id: str) -> bool:
        return device_id in self.users

    def drop(self, device_id: str) -> None:
        user_id = self.users.pop(device_id, None)
        if user_id is not None and self.gone is not None:
            self.gone(user_id, device_id)  # as the MQTT server reports a closed connection
        self.changed.set()


@dataclass
class Node:
    """One broker node: its MQTT server, its core, and what the server reports to."""

    name: str
    local: LocalDevices
    core: MessagingCore
    connections: DeviceConnections  # what the core delivers through
    events: DeviceEvents  # what the MQTT server reports to
    inbox: NodeInbox | None = None
    server: NatsServer | None = None
    nats: Client | None = None
    forgotten: list[int] = field(default_factory=list)

    async def connect(self, user_id: int, device_id: str) -> None:
        """A device's CONNECT, as the MQTT server handles it: report, wait if asked, then connected."""
        pending = self.events.device_connected(user_id, device_id)
        if pending is not None:
            await pending
        self.local.users[device_id] = user_id

    def disconnect(self, device_id: str) -> None:
        user_id = self.local.users.pop(device_id)
        self.events.device_disconnected(user_id, device_id)

    def got(self, device_id: str) -> list[bytes]:
        return self.local.received.get(device_id, [])


@dataclass
class World:
    """The nodes, a sender (fan-out), the API's publisher, and a barrier."""

    nodes: list[Node]
    sender: Inboxes
    publisher: InboxPublisher
    live: LiveConnections
    directory: FakeDirectory
    changed: asyncio.Event
    base: int  # user and conversation ids of this test start here
    settle: Callable[[], Awaitable[None]]
    subscribed: Callable[[Node, int], Awaitable[bool]]
    interest_known: Callable[[int], Awaitable[None]]

    def node(self, index: int) -> Node:
        """Node ``index`` of a two-node cluster (the only node, in process)."""
        return self.nodes[index % len(self.nodes)]

    async def connect(self, index: int, user_id: int, device_id: str) -> Node:
        node = self.node(index)
        await node.connect(user_id, device_id)
        await self.interest_known(user_id)
        return node

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(BOUND_S):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def _core(connections: DeviceConnections, directory: FakeDirectory) -> MessagingCore:
    clock = ManualClock()
    return MessagingCore(
        connections=connections,
        directory=directory,
        accepted=LocalAcceptedLog(16),
        ids=SnowflakeGenerator(1, clock_ms=clock.wall_ms),
        limits=LIMITS,
        presence_grace_s=5.0,
        clock=clock,
    )


async def _settled() -> None:
    """In one process every hand-off is done when the call returns."""


async def _no_wait(user_id: int) -> None:
    del user_id


def _in_process(base: int) -> World:
    changed = asyncio.Event()
    directory = FakeDirectory()
    local = LocalDevices(changed)
    core = _core(local, directory)
    node = Node("one", local, core, connections=local, events=core)
    local.gone = core.device_disconnected

    async def subscribed(node: Node, user_id: int) -> bool:
        return user_id in node.local.users.values()

    return World(
        [node], local, core, core, directory, changed, base, _settled, subscribed, interest_known=_no_wait
    )


def _monitor(server: NatsServer, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/{path}", timeout=5) as response:
        report: dict[str, object] = json.loads(response.read())
    return report


def _connection_subjects(server: NatsServer, name: str) -> set[str]:
    """The subjects the connection named ``name`` subscribes to, as its server lists them."""
    report = _monitor(server, "connz?subs=1")
    connections = report.get("connections")
    assert isinstance(connections, list)
    for connection in connections:
        if connection.get("name") == name:
            return set(connection.get("subscriptions_list") or [])
    raise AssertionError(f"no connection {name} on {server.name}")


def _route_subjects(server: NatsServer, remote_id: str) -> set[str]:
    """What ``server`` knows the server ``remote_id`` has subscribers for (over their route)."""
    routes = _monitor(server, "routez?subs=1").get("routes")
    assert isinstance(routes, list)
    for route in routes:
        if route.get("remote_id") == remote_id:
            return set(route.get("subscriptions_list") or [])
    return set()


async def server_id(server: NatsServer) -> str:
    """The id a server goes by in its peers' route reports."""
    return str((await asyncio.to_thread(_monitor, server, "varz"))["server_id"])


async def interest_reached(observer: NatsServer, holder_id: str, subject: str) -> None:
    """Wait until ``observer`` knows that server ``holder_id`` has a subscriber for ``subject``.

    A subscription confirmed by its own server reaches the other servers of the cluster over
    their routes a moment later, and nothing announces it: a test that publishes through another
    server right away could lose the message (a device would catch it up at its next sync).
    """
    async with asyncio.timeout(BOUND_S):
        while True:  # the server's state, asked until it has it
            if subject in await asyncio.to_thread(_route_subjects, observer, holder_id):
                return
            await asyncio.sleep(_POLL_S)


@pytest.fixture(params=["in_process", "nats"])
async def world(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[World]:
    base = int(unique[:8], 16) * 1000 + 1000
    if request.param == "in_process":
        yield _in_process(base)
        return
    cluster: NatsCluster = request.getfixturevalue("nats_cluster")
    async with AsyncExitStack() as stack:
        yield await _OverNats(cluster, base, unique, stack).world()


class _OverNats:
    """Two broker nodes and a sender, each on its own server of the cluster."""

    def __init__(self, cluster: NatsCluster, base: int, unique: str, stack: AsyncExitStack) -> None:
        self.changed = asyncio.Event()
        self.directory = FakeDirectory()
        self.base, self.unique, self.stack = base, unique, stack
        self.sender_server = cluster.servers[2]
        self.node_servers = cluster.servers[:2]
        self.nodes: list[Node] = []
        self.server_ids: dict[str, str] = {}
        self.probe_user = base + 999
        self.probes = itertools.count(1)

    async def _connect(self, server: NatsServer, name: str) -> ClusterConnection:
        connection = await ClusterConnection.connect(NatsOptions(servers=(server.url,), name=name))
        self.stack.push_async_callback(connection.close)
        return connection

    async def world(self) -> World:
        sending = await self._connect(self.sender_server, f"sender-{self.unique}")
        self.sender = NatsInboxes(sending.client)
        self.stack.push_async_callback(self.sender.close)
        for index, server in enumerate(self.node_servers):
            self.nodes.append(await self._node(f"node{index}-{self.unique}", server))
        for index, node in enumerate(self.nodes):
            await node.connect(self.probe_user, f"probe-{index}")
        await self.interest_known(self.probe_user)
        await self.interest_known(0, subjects.membership_changed())
        await self.interest_known(0, subjects.device_ended())
        return World(
            self.nodes,
            self.sender,
            self.sender,
            self.sender,
            self.directory,
            self.changed,
            self.base,
            self.settle,
            self.subscribed,
            self.interest_known,
        )

    async def _node(self, name: str, server: NatsServer) -> Node:
        connection = await self._connect(server, name)
        own = NatsInboxes(connection.client)  # what this node's core sends to other nodes
        self.stack.push_async_callback(own.close)
        local = LocalDevices(self.changed)
        connections = NodeConnections(local, own)
        core = _core(connections, self.directory)
        node = Node(name, local, core, connections, events=core, server=server, nats=connection.client)

        def forget(conversation_id: int) -> None:
            node.core.membership_changed(conversation_id)
            node.forgotten.append(conversation_id)
            self.changed.set()

        node.inbox = NodeInbox(connection.client, local, live=core, forget=forget)
        await node.inbox.start()
        self.stack.push_async_callback(node.inbox.close)
        node.events = NodeDeviceEvents(core, node.inbox)
        local.gone = node.events.device_disconnected
        self.server_ids[name] = await server_id(server)
        return node

    async def _subjects(self, node: Node) -> set[str]:
        assert node.server is not None
        return await asyncio.to_thread(_connection_subjects, node.server, node.name)

    async def interest_known(self, user_id: int, subject: str | None = None) -> None:
        """Wait until the sender's server knows which nodes subscribe to ``subject`` (routes are async)."""
        subject = subject or subjects.inbox(user_id)
        for node in self.nodes:
            if subject in await self._subjects(node):
                await interest_reached(self.sender_server, self.server_ids[node.name], subject)

    async def subscribed(self, node: Node, user_id: int) -> bool:
        """The node's own view, checked against its server's once the node's commands reached it."""
        assert node.inbox is not None
        assert node.nats is not None
        holds = node.inbox.holds(user_id)
        await node.inbox.idle()
        await node.nats.flush()  # the node's subscribe and unsubscribe commands reached its server
        assert (subjects.inbox(user_id) in await self._subjects(node)) == holds
        return holds

    async def settle(self) -> None:
        """Every node has handled what the sender sent before (one connection: sent in order)."""
        probe = next(self.probes)
        marker = self.base + 500 + probe  # no such conversation: only a marker
        expected = f"probe {probe}".encode()
        self.sender.membership_changed(marker)
        self.sender.to_inbox(self.probe_user, expected)
        async with asyncio.timeout(BOUND_S):
            while not all(
                marker in node.forgotten and expected in node.got(f"probe-{index}")
                for index, node in enumerate(self.nodes)
            ):
                self.changed.clear()
                await self.changed.wait()
        for node in self.nodes:
            node.local.calls = [user for user in node.local.calls if user != self.probe_user]


async def test_an_event_reaches_each_device_of_its_user_once_wherever_connected(world: World) -> None:
    alice, bob = world.base + 1, world.base + 2
    phone = await world.connect(0, alice, "a-phone")
    laptop = await world.connect(1, alice, "a-laptop")
    tablet = await world.connect(1, alice, "a-tablet")
    desk = await world.connect(0, bob, "b-desk")
    assert world.sender.to_inbox(alice, b"hello") == (3 if len(world.nodes) == 1 else 0)
    await world.until(lambda: all(node.got(d) for node, d in ((phone, "a-phone"), (laptop, "a-laptop"))))
    await world.settle()
    for node, device in ((phone, "a-phone"), (laptop, "a-laptop"), (tablet, "a-tablet")):
        assert node.got(device) == [b"hello"]
    assert desk.got("b-desk") == []
    for node in world.nodes:  # one hand-over per node holding alice, however many of her devices
        assert node.local.calls == [alice]


async def test_only_and_skip_device_are_respected_on_every_node(world: World) -> None:
    alice = world.base + 1
    phone = await world.connect(0, alice, "a-phone")
    laptop = await world.connect(1, alice, "a-laptop")
    world.sender.to_inbox(alice, b"for the laptop", only_device="a-laptop")
    world.sender.to_inbox(alice, b"not for the laptop", skip_device="a-laptop")
    await world.until(lambda: bool(phone.got("a-phone")) and bool(laptop.got("a-laptop")))
    await world.settle()
    assert phone.got("a-phone") == [b"not for the laptop"]
    assert laptop.got("a-laptop") == [b"for the laptop"]


async def test_a_node_without_a_device_of_the_user_gets_nothing(world: World) -> None:
    alice, bob = world.base + 1, world.base + 2
    here = await world.connect(0, alice, "a-phone")
    elsewhere = await world.connect(1, bob, "b-desk")
    world.sender.to_inbox(alice, b"for alice")
    await world.until(lambda: bool(here.got("a-phone")))
    await world.settle()
    assert await world.subscribed(here, alice)
    if elsewhere is not here:
        assert not await world.subscribed(elsewhere, alice)
        assert alice not in elsewhere.local.calls


async def test_the_last_device_leaving_unsubscribes(world: World) -> None:
    alice = world.base + 1
    node = await world.connect(0, alice, "a-phone")
    await world.connect(0, alice, "a-laptop")
    node.disconnect("a-phone")
    assert await world.subscribed(node, alice)  # the laptop is still here
    world.sender.to_inbox(alice, b"laptop")
    await world.until(lambda: bool(node.got("a-laptop")))
    node.disconnect("a-laptop")
    assert not await world.subscribed(node, alice)
    calls = len(node.local.calls)
    world.sender.to_inbox(alice, b"nobody here")
    await world.settle()
    assert node.local.calls[calls:] in ([], [alice])  # in process the server is asked, and reaches no one
    assert node.got("a-phone") == []
    assert node.got("a-laptop") == [b"laptop"]


async def test_an_ended_device_is_closed_on_its_node(world: World) -> None:
    alice = world.base + 1
    phone = await world.connect(0, alice, "a-phone")
    laptop = await world.connect(1, alice, "a-laptop")
    await world.live.end_device(DeviceEnded(alice, "a-laptop", "logout"))
    await world.until(lambda: not laptop.local.is_connected("a-laptop"))
    assert phone.local.is_connected("a-phone")
    await world.settle()
    assert await world.subscribed(phone, alice)
    assert await world.subscribed(laptop, alice) == (laptop is phone)


async def test_a_membership_change_reaches_every_node(world: World) -> None:
    cid = world.base + 50
    world.directory.conversations[cid] = frozenset({world.base + 1})
    for node in world.nodes:
        await node.core.members(cid)
        await node.core.members(cid)  # cached
    assert world.directory.member_lookups == len(world.nodes)
    world.publisher.membership_changed(cid)
    await world.settle()
    for node in world.nodes:
        await node.core.members(cid)  # forgotten: read again
    assert world.directory.member_lookups == 2 * len(world.nodes)


async def test_the_api_publishes_to_every_device_of_each_user(world: World) -> None:
    alice, bob = world.base + 1, world.base + 2
    phone = await world.connect(0, alice, "a-phone")
    desk = await world.connect(1, bob, "b-desk")
    await world.publisher.publish([alice, bob], b"conversation renamed")
    await world.until(lambda: bool(phone.got("a-phone")) and bool(desk.got("b-desk")))
    await world.settle()
    assert phone.got("a-phone") == desk.got("b-desk") == [b"conversation renamed"]


async def test_a_node_core_reaches_devices_here_at_once_and_elsewhere_through_the_cluster(
    world: World,
) -> None:
    alice = world.base + 1
    phone = await world.connect(0, alice, "a-phone")
    laptop = await world.connect(1, alice, "a-laptop")
    here = phone.connections
    assert here.to_inbox(alice, b"error for the phone", only_device="a-phone") == 1  # delivered now
    assert phone.got("a-phone") == [b"error for the phone"]
    reached = here.to_inbox(alice, b"for the laptop", only_device="a-laptop")
    assert reached == (1 if laptop is phone else 0)  # handed to the cluster: 0 here
    await world.until(lambda: bool(laptop.got("a-laptop")))
    assert laptop.got("a-laptop") == [b"for the laptop"]
