"""Chat across broker nodes: devices on two nodes, over TCP and WebSocket, 1:1 and in a group.

Every device of every member gets each message of the others once, in seq order, live (after
the device has caught up once, so its subscription is in place); history has each message once
with a dense seq.
"""

from __future__ import annotations

import threading

import pytest

from client import HubbubClient
from tests.support.chat import direct_conversation, expect_event
from tests.support.cluster import ClusterClients, HubbubCluster, assert_once_and_dense, username_of

pytestmark = pytest.mark.timeout(300)

PER_SENDER = 15


def _live_seqs(device: HubbubClient, conversation_id: str, count: int) -> list[int]:
    """The seqs of the next ``count`` message events of the conversation, in arrival order."""
    return [
        expect_event(device, "message", lambda event: event["conversation_id"] == conversation_id)["seq"]
        for _ in range(count)
    ]


def _burst(senders: list[HubbubClient], conversation_id: str) -> dict[str, HubbubClient]:
    """Every sender sends ``PER_SENDER`` messages at once; cmid -> the device that sent it, once acked."""
    sent: dict[str, HubbubClient] = {}
    lock = threading.Lock()

    def send_all(sender: HubbubClient) -> None:
        for index in range(PER_SENDER):
            pending = sender.send(conversation_id, f"{sender.device_id[:6]} says {index}")
            with lock:
                sent[pending.cmid] = sender

    threads = [threading.Thread(target=send_all, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sender in senders:
        assert sender.outbox.emptied.wait(60), f"{len(sender.outbox)} never acknowledged"
    return sent


def _check_every_device(
    devices: list[HubbubClient],
    senders: list[HubbubClient],
    conversation_id: str,
    sent: dict[str, HubbubClient],
) -> None:
    rows = assert_once_and_dense(devices[0], conversation_id, set(sent))
    sender_of_seq = {row["seq"]: sent[row["cmid"]] for row in rows if row["cmid"] in sent}
    for device in devices:
        expected = sorted(seq for seq, sender in sender_of_seq.items() if sender is not device)
        live = _live_seqs(device, conversation_id, len(expected))
        assert live == expected, f"device {device.device_id} of {device.user_id} got {live}"
        assert device.settled()
        own = [seq for seq, sender in sender_of_seq.items() if sender is device]
        assert device.timelines[conversation_id].held >= max([*expected, *own])
    assert all(not sender.errors for sender in senders)


def _ready(devices: list[HubbubClient]) -> None:
    for device in devices:
        assert device.settled(), "the catch-up after connecting did not finish"


def test_a_direct_chat_between_devices_on_two_nodes_over_tcp_and_websocket(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    one, two = cluster.brokers
    alice_phone = users(broker=one)
    alice_laptop = users(username_of(alice_phone), broker=two, transport="websockets")
    bob_phone = users(broker=two)
    bob_web = users(username_of(bob_phone), broker=one, transport="websockets")
    devices = [alice_phone, alice_laptop, bob_phone, bob_web]
    conversation_id = direct_conversation(alice_phone, bob_phone)
    _ready(devices)
    sent = _burst([alice_phone, bob_web], conversation_id)
    _check_every_device(devices, [alice_phone, bob_web], conversation_id, sent)


def test_a_group_spread_over_two_nodes_gets_every_message_once_in_order(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    one, two = cluster.brokers
    alice = users(broker=one)
    alice_web = users(username_of(alice), broker=two, transport="websockets")
    bob = users(broker=two)
    carol = users(broker=two, transport="websockets")
    dave = users(broker=one, transport="websockets")
    erin = users(broker=one)
    members = [bob, carol, dave, erin]
    devices = [alice, alice_web, *members]
    _ready(devices)
    created = alice.request(
        "POST",
        "/v1/conversations",
        json={"type": "group", "title": "across nodes", "member_ids": [member.user_id for member in members]},
    )
    assert created.status_code == 201, created.text
    conversation_id: str = created.json()["id"]
    for device in devices:  # the creation event reaches every member's devices on both nodes
        expect_event(device, "conversation", lambda event: event["conversation"]["id"] == conversation_id)
    senders = [alice, carol, dave, erin]
    sent = _burst(senders, conversation_id)
    _check_every_device(devices, senders, conversation_id, sent)


def test_every_process_answers_healthz_and_metrics(cluster: HubbubCluster) -> None:
    for process in cluster.processes.processes.values():
        assert cluster.healthz(process) == 200, process.log_tail()
        assert "hubbub_" in cluster.metrics(process), process.name
