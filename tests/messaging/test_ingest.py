"""Ingest (messaging/ingest.py): validation, rate, membership, ids — through the core, no broker."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable

import orjson
import pytest

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage, SendRequest
from hubbub.errors import Unavailable
from hubbub.ids import SnowflakeGenerator
from messaging import MessagingCore
from persister import LocalAcceptedLog
from tests.messaging.conftest import ALICE, BOB, CAROL, CID, GRACE_S, LIMITS, World


def _send(cmid: str, text: str = "hello") -> bytes:
    return orjson.dumps({"cmid": cmid, "text": text})


async def _deliver(world: World, payload: bytes, *, sender: int = ALICE, device: str = "alice-phone") -> None:
    pending = world.core.send(sender, device, CID, payload)
    if pending is not None:
        await pending


async def test_an_accepted_message_is_stamped_from_the_session_and_the_clock(world: World) -> None:
    await _deliver(world, _send("c1"))
    accepted = world.accepted.get_nowait()
    assert (accepted.conversation_id, accepted.sender_id, accepted.sender_device_id) == (
        CID,
        ALICE,
        "alice-phone",
    )
    assert (accepted.cmid, accepted.text) == ("c1", "hello")
    assert accepted.created_at_ms == world.clock.wall_ms()
    assert accepted.message_id > 0
    assert world.connections.deliveries == []


async def test_a_send_to_a_cached_conversation_is_handled_without_a_coroutine(world: World) -> None:
    first = world.core.send(ALICE, "alice-phone", CID, _send("c1"))
    assert first is not None  # the membership is looked up once
    await first
    assert world.core.send(ALICE, "alice-phone", CID, _send("c2")) is None
    assert world.directory.member_lookups == 1
    ids = [world.accepted.get_nowait().message_id for _ in range(2)]
    assert ids[0] < ids[1]


async def test_membership_is_cached_for_its_ttl_and_forgotten_on_change(world: World) -> None:
    await world.core.members(CID)
    world.clock.advance(29)
    await world.core.members(CID)
    assert world.directory.member_lookups == 1
    world.clock.advance(1)
    await world.core.members(CID)
    assert world.directory.member_lookups == 2
    world.core.membership_changed(CID)
    await world.core.members(CID)
    assert world.directory.member_lookups == 3


def _errors(world: World) -> list[tuple[str | None, object, object]]:
    return [
        (delivery.only_device, delivery.event["code"], delivery.event["cmid"])
        for delivery in world.connections.events("error")
    ]


async def test_bad_payloads_get_an_error_event_for_the_sending_device_only(world: World) -> None:
    await _deliver(world, b"not json")
    await _deliver(world, _send("c2", "x" * 21))
    await _deliver(world, orjson.dumps({"cmid": "c3", "text": "hi", "image": "..."}))
    await _deliver(world, _send("c4", "   "))
    assert _errors(world) == [
        ("alice-phone", "invalid", None),
        ("alice-phone", "too_long", "c2"),
        ("alice-phone", "invalid", "c3"),
        ("alice-phone", "empty", "c4"),
    ]
    assert world.accepted.empty()


async def test_a_non_member_is_refused_as_if_the_conversation_did_not_exist(world: World) -> None:
    world.directory.conversations[CID] = frozenset({BOB, CAROL})
    await _deliver(world, _send("c1"))
    assert _errors(world) == [("alice-phone", "not_member", "c1")]
    assert world.accepted.empty()


async def test_the_send_rate_is_a_token_bucket_per_device(world: World) -> None:
    for index in range(3):  # the burst
        await _deliver(world, _send(f"c{index}"))
    await _deliver(world, _send("c3"))
    await _deliver(world, _send("other"), device="alice-laptop")  # another device has its own bucket
    assert _errors(world) == [("alice-phone", "rate_limited", "c3")]
    assert world.accepted.qsize() == 4  # c0 c1 c2 other
    world.accepted.get_nowait()  # room for one more
    world.clock.advance(1.0)  # one token a second
    await _deliver(world, _send("c4"))
    assert len(_errors(world)) == 1
    assert world.accepted.qsize() == 4


async def test_a_full_persister_queue_holds_the_publish_back(world: World) -> None:
    world.clock.advance(100)  # a full bucket
    for index in range(3):
        await _deliver(world, _send(f"c{index}"))
    await _deliver(world, _send("x"), device="alice-laptop")  # the queue (4) is full now
    assert world.accepted.full()
    pending = world.core.send(ALICE, "alice-tablet", CID, _send("waits"))
    assert pending is not None  # the PUBACK waits for this
    world.accepted.get_nowait()
    await pending
    assert [world.accepted.get_nowait().cmid for _ in range(4)][-1] == "waits"


async def test_typing_reaches_the_other_members_and_is_dropped_beyond_its_rate(world: World) -> None:
    for _ in range(5):
        pending = world.core.typing(ALICE, "alice-phone", CID)
        if pending is not None:
            await pending
    typing = world.connections.events("typing")
    assert sorted(delivery.user_id for delivery in typing) == sorted([BOB, CAROL] * 3)  # a burst of 3
    assert typing[0].event == {"kind": "typing", "conversation_id": str(CID), "user_id": str(ALICE)}


async def test_typing_by_a_non_member_reaches_nobody(world: World) -> None:
    pending = world.core.typing(99, "mallory", CID)
    if pending is not None:
        await pending
    assert world.connections.deliveries == []


async def test_a_rest_submit_waits_for_the_commit(world: World) -> None:
    submitted = asyncio.ensure_future(world.core.submit(CID, ALICE, "alice-web", SendRequest("c1", "hello")))
    accepted = await world.accepted.get()
    result = CommitResult(
        message=CommittedMessage(
            conversation_id=CID,
            message_id=accepted.message_id,
            seq=1,
            sender_id=ALICE,
            cmid="c1",
            text="hello",
            created_at_ms=accepted.created_at_ms,
        ),
        duplicate=False,
        sender_device_id="alice-web",
    )
    await world.core.committed([result])
    assert await submitted == result


def _committed(accepted: AcceptedMessage, seq: int) -> CommitResult:
    return CommitResult(
        message=CommittedMessage(
            conversation_id=accepted.conversation_id,
            message_id=accepted.message_id,
            seq=seq,
            sender_id=accepted.sender_id,
            cmid=accepted.cmid,
            text=accepted.text,
            created_at_ms=accepted.created_at_ms,
        ),
        duplicate=False,
        sender_device_id=accepted.sender_device_id,
    )


async def test_a_rest_submit_committed_elsewhere_is_woken_by_the_reply_without_fan_out(world: World) -> None:
    submitted = asyncio.ensure_future(world.core.submit(CID, ALICE, "alice-web", SendRequest("c1", "hello")))
    result = _committed(await world.accepted.get(), 1)
    world.core.commit_replied([result])  # the persister elsewhere fanned out itself
    assert await submitted == result
    assert world.connections.deliveries == []


class _Unreachable:
    """An accepted log that cannot hold anything now (JetStream without a leader, say)."""

    def __init__(self) -> None:
        self.offers: list[tuple[AcceptedMessage, bool]] = []

    def offer(self, message: AcceptedMessage, *, reply: bool = False) -> Awaitable[None] | None:
        self.offers.append((message, reply))
        return self._fail()

    async def _fail(self) -> None:
        raise Unavailable("the cluster cannot take messages now", retry_after=2)


def _core_over(log: _Unreachable, world: World) -> MessagingCore:
    return MessagingCore(
        connections=world.connections,
        directory=world.directory,
        accepted=log,
        ids=SnowflakeGenerator(1, clock_ms=world.clock.wall_ms),
        limits=LIMITS,
        presence_grace_s=GRACE_S,
        clock=world.clock,
    )


async def test_a_log_that_cannot_hold_the_message_answers_unavailable(world: World) -> None:
    log = _Unreachable()
    core = _core_over(log, world)
    pending = core.send(ALICE, "alice-phone", CID, _send("c1"))
    assert pending is not None  # the PUBACK waits, then goes with the error event
    await pending
    assert _errors(world) == [("alice-phone", "unavailable", "c1")]
    assert world.connections.events("error")[0].event["retry_after_ms"] == 2_000
    with pytest.raises(Unavailable):  # a REST submit: a 503
        await core.submit(CID, ALICE, "alice-web", SendRequest("c2", "hello"))
    assert [(message.cmid, reply) for message, reply in log.offers] == [("c1", False), ("c2", True)]


async def test_a_rest_submit_with_no_commit_result_in_time_is_unavailable(world: World) -> None:
    core = MessagingCore(
        connections=world.connections,
        directory=world.directory,
        accepted=LocalAcceptedLog(4),  # nobody commits
        ids=SnowflakeGenerator(1, clock_ms=world.clock.wall_ms),
        limits=dataclasses.replace(LIMITS, submit_timeout_s=0.01),
        presence_grace_s=GRACE_S,
        clock=world.clock,
    )
    with pytest.raises(Unavailable, match="not committed in time"):
        await core.submit(CID, ALICE, "alice-web", SendRequest("c1", "hello"))
