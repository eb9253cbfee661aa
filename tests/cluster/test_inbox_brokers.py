"""Two real MQTT servers in this process, each a broker node of one cluster, and real MQTT devices.

Each node is wired as ``hubbub broker`` will be in a cluster: its messaging core delivers through
``NodeConnections`` (local, or NATS), its MQTT server reports to ``NodeDeviceEvents`` (the node's
inbox subscriptions, then the core), and ``NodeInbox`` hands what arrives to the MQTT server.
The nodes and a persister's sender each connect to their own server of the 3-server cluster.
Devices are paho clients on their own threads, checked against docs/asyncapi.json.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import orjson
import pytest

from broker_plugins import BrokerOptions, HubbubBroker
from cluster.connection import ClusterConnection, NatsOptions
from cluster.inbox import NatsInboxes
from cluster.node_inbox import NodeConnections, NodeDeviceEvents, NodeInbox
from hubbub import subjects, topics
from hubbub.envelope import CommitResult, CommittedMessage
from hubbub.ids import SnowflakeGenerator
from hubbub.sessions import DeviceEnded
from hubbub.tokens import TokenCodec
from messaging import IngestLimits, MessagingCore
from messaging.fanout import fan_out
from persister.local_log import LocalAcceptedLog
from tests.cluster.test_inbox_contract import BOUND_S, interest_reached, server_id
from tests.messaging.doubles import FakeDeviceSessions, FakeDirectory, ManualClock
from tests.support.mqtt import Device
from tests.support.nats import NatsCluster, NatsServer

LIMITS = IngestLimits(max_chars=200, sends_per_second=100.0, send_burst=100, membership_ttl_s=300.0)


@dataclass
class BrokerNode:
    """One broker node: its MQTT server, core and NATS side."""

    broker: HubbubBroker
    core: MessagingCore
    accepted: LocalAcceptedLog
    inbox: NodeInbox
    server: NatsServer
    server_id: str


@dataclass
class Cluster:
    nodes: list[BrokerNode]
    sender: NatsInboxes  # a persister's
    sender_server: NatsServer
    directory: FakeDirectory
    tokens: TokenCodec
    base: int


@pytest.fixture
async def cluster(nats_cluster: NatsCluster, unique: str) -> AsyncIterator[Cluster]:
    tokens = TokenCodec("s" * 48, access_ttl_s=600)
    directory = FakeDirectory()
    async with AsyncExitStack() as stack:

        async def connect(server: NatsServer, name: str) -> ClusterConnection:
            connection = await ClusterConnection.connect(NatsOptions(servers=(server.url,), name=name))
            stack.push_async_callback(connection.close)
            return connection

        nodes = []
        for index, server in enumerate(nats_cluster.servers[:2]):
            connection = await connect(server, f"broker{index}-{unique}")
            own = NatsInboxes(connection.client)
            stack.push_async_callback(own.close)
            broker = HubbubBroker(
                BrokerOptions(bind="127.0.0.1", mqtt_port=0, max_packet_bytes=1 << 20, connect_timeout_s=5),
                tokens=tokens,
                relations=directory,
                devices=FakeDeviceSessions(),
            )
            clock = ManualClock()
            accepted = LocalAcceptedLog(16)
            core = MessagingCore(
                connections=NodeConnections(broker, own),
                directory=directory,
                accepted=accepted,
                ids=SnowflakeGenerator(index + 1, clock_ms=clock.wall_ms),
                limits=LIMITS,
                presence_grace_s=5.0,
                clock=clock,
            )
            inbox = NodeInbox(connection.client, broker, live=core, forget=core.membership_changed)
            await inbox.start()
            stack.push_async_callback(inbox.close)
            await broker.start(NodeDeviceEvents(core, inbox))
            stack.push_async_callback(broker.shutdown)
            nodes.append(BrokerNode(broker, core, accepted, inbox, server, await server_id(server)))
        sender_server = nats_cluster.servers[2]
        sender = NatsInboxes((await connect(sender_server, f"persister-{unique}")).client)
        stack.push_async_callback(sender.close)
        yield Cluster(nodes, sender, sender_server, directory, tokens, int(unique[:8], 16) * 1000 + 1000)


async def _device(cluster: Cluster, node: BrokerNode, user_id: int, device_id: str) -> Device:
    """A device connected to ``node`` and subscribed to its inbox."""
    device = Device(
        host="127.0.0.1",
        port=node.broker.mqtt_port,
        client_id=device_id,
        username=str(user_id),
        password=cluster.tokens.issue_access(user_id, device_id),
    )
    assert await asyncio.to_thread(device.connect) == 0
    assert await asyncio.to_thread(device.subscribe, topics.inbox(user_id)) == [1]
    return device


async def _event(device: Device) -> dict[str, object]:
    received = await asyncio.to_thread(device.next_message, BOUND_S)
    event: dict[str, object] = orjson.loads(received.payload)
    return event


async def test_devices_on_two_nodes_chat_through_nats(cluster: Cluster) -> None:
    alice, bob, cid = cluster.base + 1, cluster.base + 2, cluster.base + 3
    cluster.directory.conversations[cid] = frozenset({alice, bob})
    first, second = cluster.nodes
    phone = await _device(cluster, first, alice, f"phone-{alice}")
    laptop = await _device(cluster, second, alice, f"laptop-{alice}")
    desk = await _device(cluster, second, bob, f"desk-{bob}")
    devices = (phone, laptop, desk)
    try:
        for user in (alice, bob):  # the persister's server and the first node's know where users are
            await interest_reached(cluster.sender_server, second.server_id, subjects.inbox(user))
        await interest_reached(cluster.sender_server, first.server_id, subjects.inbox(alice))
        await interest_reached(first.server, second.server_id, subjects.inbox(bob))
        assert first.inbox.holds(alice)
        assert not first.inbox.holds(bob)  # no device of bob on the first node: nothing of his crosses
        assert (second.inbox.users, first.inbox.users) == (2, 1)

        # alice's phone sends on the first node; the persister commits and fans out over NATS
        await asyncio.to_thread(phone.publish, f"conv/{cid}/send", b'{"cmid": "c1", "text": "hi bob"}')
        accepted = (await first.accepted.next_batch(1)).messages[
            0
        ]  # ingest accepted it: the PUBACK came after
        message = CommittedMessage(
            cid, accepted.message_id, 1, alice, accepted.cmid, accepted.text, accepted.created_at_ms
        )
        result = CommitResult(message, duplicate=False, sender_device_id=accepted.sender_device_id)
        await fan_out([result], cluster.directory.members, cluster.sender)
        ack, mirrored, received = await asyncio.gather(_event(phone), _event(laptop), _event(desk))
        assert (ack["kind"], ack["cmid"], ack["seq"]) == ("ack", "c1", 1)
        assert (mirrored["kind"], mirrored["text"], mirrored["seq"]) == ("message", "hi bob", 1)
        assert received == mirrored

        # typing crosses from the first node's core to bob's desk on the second
        await asyncio.to_thread(phone.publish, f"conv/{cid}/typing", b"")
        typing = await _event(desk)
        assert (typing["kind"], typing["user_id"]) == ("typing", str(alice))

        # the API ends the laptop: its node closes it
        await cluster.sender.end_device(DeviceEnded(alice, f"laptop-{alice}", "logout"))
        assert await asyncio.to_thread(laptop.disconnected.wait, BOUND_S)
        assert phone.messages.empty()
        assert desk.messages.empty()
        assert laptop.messages.empty()
    finally:
        for device in devices:
            await asyncio.to_thread(device.close)
