"""Fan-out of committed messages (messaging/fanout.py): who gets the message, who the ack."""

from __future__ import annotations

from hubbub.connections import Inboxes
from hubbub.envelope import CommitResult, CommittedMessage
from messaging.fanout import fan_out
from tests.messaging.conftest import ALICE, BOB, CAROL, CID, World


def _result(seq: int, *, duplicate: bool = False, cid: int = CID) -> CommitResult:
    message = CommittedMessage(
        conversation_id=cid,
        message_id=1000 + seq,
        seq=seq,
        sender_id=ALICE,
        cmid=f"c{seq}",
        text="hi",
        created_at_ms=1_750_000_000_000,
    )
    return CommitResult(message=message, duplicate=duplicate, sender_device_id="alice-phone")


async def test_every_member_gets_the_message_and_the_sending_device_the_ack(world: World) -> None:
    await world.core.committed([_result(1)])
    messages = world.connections.events("message")
    assert sorted((d.user_id, d.only_device, d.skip_device) for d in messages) == [
        (ALICE, None, "alice-phone"),  # the sender's other devices, not the one that sent it
        (BOB, None, None),
        (CAROL, None, None),
    ]
    assert messages[0].event["seq"] == 1
    (ack,) = world.connections.events("ack")
    assert (ack.user_id, ack.only_device, ack.skip_device) == (ALICE, "alice-phone", None)
    assert (ack.event["cmid"], ack.event["message_id"], ack.event["seq"]) == ("c1", "1001", 1)


async def test_a_message_stored_before_goes_out_again_with_its_original_ids(world: World) -> None:
    # A persister killed between its commit and its fan-out: the redelivered batch finds the
    # message stored, and the members still connected must get it (they merge by seq).
    await world.core.committed([_result(1, duplicate=True)])
    messages = world.connections.events("message")
    assert sorted((d.user_id, d.skip_device) for d in messages) == [
        (ALICE, "alice-phone"),
        (BOB, None),
        (CAROL, None),
    ]
    assert {(d.event["message_id"], d.event["seq"]) for d in messages} == {("1001", 1)}
    (ack,) = world.connections.events("ack")
    assert (ack.only_device, ack.event["message_id"], ack.event["seq"]) == ("alice-phone", "1001", 1)


async def test_a_batch_keeps_commit_order_and_looks_members_up_once_per_conversation(world: World) -> None:
    world.directory.conversations[200] = frozenset({ALICE, BOB})
    await world.core.committed([_result(1), _result(2), _result(1, cid=200), _result(3)])
    assert world.directory.member_lookups == 2
    bob = [
        (d.event["conversation_id"], d.event["seq"]) for d in world.connections.deliveries if d.user_id == BOB
    ]
    assert bob == [(str(CID), 1), (str(CID), 2), ("200", 1), (str(CID), 3)]


async def test_a_conversation_gone_meanwhile_still_acks_its_sender(world: World) -> None:
    del world.directory.conversations[CID]
    await world.core.committed([_result(1)])
    assert world.connections.events("message") == []
    assert len(world.connections.events("ack")) == 1


class _Recorder:
    """Only ``Inboxes`` (what a persister in a cluster has: no presence, no connections)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str | None, str | None]] = []

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        del payload
        self.sent.append((user_id, only_device, skip_device))
        return 0


async def test_fan_out_needs_nothing_but_inboxes(world: World) -> None:
    inboxes = _Recorder()
    _: Inboxes = inboxes
    await fan_out([_result(1)], world.directory.members, inboxes)
    assert sorted(inboxes.sent, key=str) == sorted(
        [(ALICE, None, "alice-phone"), (BOB, None, None), (CAROL, None, None), (ALICE, "alice-phone", None)],
        key=str,
    )
