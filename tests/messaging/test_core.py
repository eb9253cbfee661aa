"""The core's other duties (messaging/core.py): presence publishing, device notices, last activity."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hubbub.envelope import SendRequest
from hubbub.errors import Unavailable
from hubbub.sessions import DeviceEnded
from tests.messaging.conftest import ALICE, BOB, CID, GRACE_S, World
from tests.messaging.doubles import START_WALL_MS


async def test_presence_is_set_retained_and_the_last_activity_stored(world: World) -> None:
    world.core.device_connected(ALICE, "alice-phone")
    world.clock.advance(60)
    world.core.device_disconnected(ALICE, "alice-phone")
    world.clock.advance(GRACE_S + 60)
    assert [state["status"] for state in world.connections.presence[ALICE]] == ["online", "offline"]
    assert world.connections.presence[ALICE][0] == {
        "user_id": str(ALICE),
        "status": "online",
        "last_active_at": "2025-06-15T15:06:40.000Z",
    }
    await world.core.close()  # waits for the last-active writer to drain
    assert (
        world.directory.last_seen[ALICE] == START_WALL_MS + (60 + GRACE_S) * 1000
    )  # when offline was decided
    assert world.core.online([ALICE, BOB]) == set()


async def test_a_presence_snapshot_says_online_here_and_the_stored_last_activity(world: World) -> None:
    world.directory.last_seen[BOB] = START_WALL_MS
    world.core.device_connected(ALICE, "alice-phone")
    alice = orjson.loads(await world.core.presence_snapshot(ALICE))
    bob = orjson.loads(await world.core.presence_snapshot(BOB))
    assert (alice["status"], bob["status"], bob["last_active_at"]) == (
        "online",
        "offline",
        "2025-06-15T15:06:40.000Z",
    )
    assert orjson.loads(await world.core.presence_snapshot(99))["last_active_at"] is None


async def test_a_notice_for_an_offline_device_waits_for_its_inbox_subscription(world: World) -> None:
    notice = orjson.dumps({"kind": "push", "action": "register_again"})
    world.core.notify_device(ALICE, "alice-phone", notice)  # not connected: kept
    world.core.inbox_subscribed(ALICE, "alice-laptop")  # another device: not for it
    world.connections.connected.add("alice-phone")
    world.connections.devices_of[ALICE] = {"alice-phone"}
    world.core.inbox_subscribed(ALICE, "alice-phone")
    world.core.inbox_subscribed(ALICE, "alice-phone")  # handed over once
    pushes = world.connections.events("push")
    assert [(d.user_id, d.only_device) for d in pushes] == [(ALICE, "alice-phone")] * 2  # tried, then given


async def test_a_notice_for_a_connected_device_is_delivered_at_once(world: World) -> None:
    world.connections.connected.add("alice-phone")
    world.connections.devices_of[ALICE] = {"alice-phone"}
    world.core.notify_device(ALICE, "alice-phone", orjson.dumps({"kind": "push"}))
    world.core.inbox_subscribed(ALICE, "alice-phone")
    assert len(world.connections.events("push")) == 1


async def test_events_for_users_reach_every_device_of_each(world: World) -> None:
    await world.core.publish([ALICE, BOB], orjson.dumps({"kind": "conversation"}))
    assert [(d.user_id, d.only_device, d.skip_device) for d in world.connections.deliveries] == [
        (ALICE, None, None),
        (BOB, None, None),
    ]


async def test_after_close_device_events_change_no_presence(world: World) -> None:
    world.core.device_connected(ALICE, "alice-phone")
    await world.core.close()
    world.core.device_disconnected(ALICE, "alice-phone")
    world.clock.advance(GRACE_S * 2)
    assert [state["status"] for state in world.connections.presence[ALICE]] == ["online"]


async def test_an_ended_device_is_dropped_and_its_waiting_notice_forgotten(world: World) -> None:
    world.core.notify_device(ALICE, "alice-phone", orjson.dumps({"kind": "push"}))  # kept for its return
    await world.core.end_device(DeviceEnded(ALICE, "alice-phone", "logout"))
    assert world.connections.dropped == ["alice-phone"]
    world.connections.connected.add("alice-phone")
    world.core.inbox_subscribed(ALICE, "alice-phone")
    assert len(world.connections.events("push")) == 1  # the first try only: nothing handed over later


async def test_a_failed_commit_tells_each_sending_device_to_resend(world: World) -> None:
    for user_id, device, cmid in ((ALICE, "alice-phone", "a1"), (BOB, "bob-laptop", "b1")):
        pending = world.core.send(user_id, device, CID, orjson.dumps({"cmid": cmid, "text": "hi"}))
        if pending is not None:
            await pending
    batch = [world.accepted.get_nowait(), world.accepted.get_nowait()]
    world.core.commit_failed(batch, 2_000)
    errors = world.connections.events("error")
    assert [(e.user_id, e.only_device) for e in errors] == [(ALICE, "alice-phone"), (BOB, "bob-laptop")]
    assert [e.event for e in errors] == [
        {
            "kind": "error",
            "conversation_id": str(CID),
            "cmid": cmid,
            "code": "unavailable",
            "message": "the message could not be stored now; resend it (same cmid) later",
            "retry_after_ms": 2_000,
        }
        for cmid in ("a1", "b1")
    ]
    assert world.connections.events("message") == []
    assert world.connections.events("ack") == []


async def test_a_rest_submit_whose_commit_fails_is_unavailable_with_a_retry_hint(world: World) -> None:
    submitted = asyncio.ensure_future(world.core.submit(CID, ALICE, "alice-web", SendRequest("c1", "hello")))
    accepted = await world.accepted.get()
    world.core.commit_failed([accepted], 1_500)
    with pytest.raises(Unavailable) as refused:
        await submitted
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (503, "unavailable", 2)
