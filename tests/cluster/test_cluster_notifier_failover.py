"""A notifier killed (``kill -9``) holding a batch: no push lost for an offline user, none sent twice.

Offline members of a group each have a push token (the webhook provider, pointed at the local
push gateway, with coalescing off so every message is one push per member). The notifier is
frozen (``SIGSTOP``) while a burst is committed, so the committed stream hands the burst to a
process that will never act on it, then killed and started again: the shard's next owner takes
the unacked batch from the stream's ack floor. A marker message follows; every
``(conversation, seq, member)`` must reach the gateway exactly once.
"""

from __future__ import annotations

import collections
import queue
import time
from collections.abc import Callable
from typing import Any

import pytest

from client import HubbubClient
from tests.support.cluster import OUTCOME_S, ClusterClients, HubbubCluster

pytestmark = pytest.mark.timeout(300)

OFFLINE_MEMBERS = 3  # each a sign-up (a password hash): three show "each member once" as well as eight
BURST = 25
Push = dict[str, Any]
PushKey = tuple[str, int, str]


def register_push(device: HubbubClient) -> None:
    """A push token for the device (the webhook provider takes what no native one does)."""
    token = device.device_id.encode().hex().ljust(64, "0")[:64]
    response = device.request(
        "PUT", f"/v1/devices/{device.device_id}/push", json={"provider": "apns", "token": token}
    )
    assert response.status_code == 200, response.text


def pushes_until(
    gateway_queue: queue.Queue[Push], done: Callable[[list[Push]], bool], timeout: float = OUTCOME_S
) -> list[Push]:
    """Every push the gateway receives from now until ``done`` holds for them."""
    pushes: list[Push] = []
    deadline = time.monotonic() + timeout
    while not done(pushes):
        try:
            pushes.append(gateway_queue.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"the pushes stopped after {len(pushes)}") from None
    return pushes


def push_key(push: Push) -> PushKey:
    """``(conversation, seq, token)`` of a push."""
    data = push["notification"]["data"]
    return data["conversation_id"], data["seq"], push["token"]["id"]


def offline_group(users: ClusterClients) -> tuple[HubbubClient, set[str], str]:
    """An online sender, offline members with push tokens; the sender, their token ids, the group."""
    alice = users()
    offline = [users(connect=False) for _ in range(OFFLINE_MEMBERS)]
    for member in offline:
        register_push(member)
    created = alice.request(
        "POST",
        "/v1/conversations",
        json={"type": "group", "title": "pushed", "member_ids": [member.user_id for member in offline]},
    )
    assert created.status_code == 201, created.text
    return alice, {member.device_id for member in offline}, created.json()["id"]


def assert_each_pushed_once(
    gateway_queue: queue.Queue[Push],
    earlier: list[Push],
    expected: set[PushKey],
    tokens: set[str],
    timeout: float = OUTCOME_S,
) -> None:
    """Wait until every expected push arrived (``earlier`` counted too); none came twice."""

    def ours(pushes: list[Push]) -> list[PushKey]:  # the gateway is shared by the session's tests
        return [push_key(push) for push in pushes if push["token"]["id"] in tokens]

    rest = pushes_until(gateway_queue, lambda pushes: expected <= set(ours([*earlier, *pushes])), timeout)
    counts = collections.Counter(ours([*earlier, *rest]))
    doubled = {key: count for key, count in counts.items() if count > 1}
    assert not doubled, f"pushed more than once: {doubled}"
    assert set(counts) == expected


def test_a_notifier_killed_holding_a_batch_pushes_each_offline_member_once_per_message(
    cluster: HubbubCluster, users: ClusterClients
) -> None:
    alice, tokens, conversation_id = offline_group(users)
    cluster.notifier.pause()
    for index in range(BURST):
        alice.send(conversation_id, f"while you were out {index}")
    assert alice.outbox.emptied.wait(OUTCOME_S)  # committed, so on the committed stream
    cluster.notifier.kill()
    cluster.notifier.restart()
    marker = alice.send(conversation_id, "marker")
    assert alice.outbox.emptied.wait(OUTCOME_S)
    marker_seq = alice.acks[marker.cmid]["seq"]
    assert marker_seq == BURST + 1
    expected = {(conversation_id, seq, token) for seq in range(1, marker_seq + 1) for token in tokens}
    assert_each_pushed_once(cluster.gateway.received, [], expected, tokens)
