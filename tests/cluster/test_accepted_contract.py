"""The accepted hand-off (``hubbub.handoffs``), one contract for both implementations.

In-process: ``persister.LocalAcceptedLog`` (one node). NATS: ``cluster.NatsAcceptedLog`` writing
to the session's real 3-server JetStream cluster and ``cluster.ShardIntake`` reading every shard
under a lease epoch given here (the leases themselves are ``test_intake.py``'s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nats.js.errors import NotFoundError

from cluster.accepted import NatsAcceptedLog, ensure_accepted_stream
from cluster.connection import ClusterConnection, NatsOptions
from cluster.intake import ShardIntake
from hubbub import subjects
from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.handoffs import AcceptedBatch, AcceptedLog, AcceptedSource
from hubbub.shards import ShardMap
from persister import LocalAcceptedLog
from tests.support.nats import NatsCluster

SHARDS = ShardMap(conversation_shards=4)
EPOCH = 7
BOUND_S = 30.0


@dataclass
class Handoff:
    log: AcceptedLog
    source: AcceptedSource
    fenced: bool
    redelivers: bool


async def fresh_streams(conn: ClusterConnection) -> None:
    """Tests share the session's cluster and the fixed stream names: each starts from none."""
    for stream in (subjects.ACCEPTED_STREAM, subjects.COMMITTED_STREAM):
        with contextlib.suppress(NotFoundError):
            await conn.js.delete_stream(stream)


async def nats_connection(cluster: NatsCluster, name: str) -> ClusterConnection:
    return await ClusterConnection.connect(NatsOptions(servers=tuple(cluster.urls), name=name))


@pytest.fixture(params=["in-process", "nats"])
async def handoff(request: pytest.FixtureRequest) -> AsyncIterator[Handoff]:
    if request.param == "in-process":
        local = LocalAcceptedLog(100)
        yield Handoff(local, local, fenced=False, redelivers=False)
        return
    cluster: NatsCluster = request.getfixturevalue("nats_cluster")
    conn = await nats_connection(cluster, "contract")
    try:
        await fresh_streams(conn)
        await ensure_accepted_stream(conn.js, replicas=3)
        intake = ShardIntake(conn, idle_probe_s=1.0)
        for shard in range(SHARDS.conversation_shards):
            intake.shard_gained(shard, EPOCH)
        try:
            yield Handoff(NatsAcceptedLog(conn.js, SHARDS), intake, fenced=True, redelivers=True)
        finally:
            await intake.close()
    finally:
        await conn.close()


def accepted(conversation_id: int, index: int) -> AcceptedMessage:
    return AcceptedMessage(
        conversation_id=conversation_id,
        message_id=1_000_000 + 1_000 * conversation_id + index,
        sender_id=42,
        sender_device_id="phone",
        cmid=f"c{conversation_id}-{index}",
        text=f"hello {index} ✓",
        created_at_ms=1_700_000_000_000 + index,
    )


def results_of(batch: AcceptedBatch) -> list[CommitResult]:
    return [
        CommitResult(
            CommittedMessage(
                m.conversation_id, m.message_id, i + 1, m.sender_id, m.cmid, m.text, m.created_at_ms
            ),
            duplicate=False,
            sender_device_id=m.sender_device_id,
        )
        for i, m in enumerate(batch.messages)
    ]


async def offer(log: AcceptedLog, message: AcceptedMessage) -> None:
    pending = log.offer(message)
    if pending is not None:
        await pending


async def take(source: AcceptedSource, count: int, max_messages: int = 500) -> list[AcceptedBatch]:
    """Batches until ``count`` messages came (each settled ``done``)."""
    batches: list[AcceptedBatch] = []
    while sum(len(batch.messages) for batch in batches) < count:
        batch = await source.next_batch(max_messages)
        await batch.done(results_of(batch))
        batches.append(batch)
    return batches


async def next_is_only(source: AcceptedSource, marker: AcceptedMessage) -> None:
    """What comes next is ``marker`` alone: nothing settled before came again."""
    batch = await source.next_batch(500)
    await batch.done(results_of(batch))
    assert list(batch.messages) == [marker]


async def test_every_offered_message_comes_once_in_offer_order_per_conversation(handoff: Handoff) -> None:
    sent = [accepted(cid, index) for index in range(12) for cid in (1, 2, 3, 4, 5)]
    async with asyncio.timeout(BOUND_S):
        for message in sent:
            await offer(handoff.log, message)
        batches = await take(handoff.source, len(sent))
        received = [message for batch in batches for message in batch.messages]
        assert sorted(received, key=lambda m: m.message_id) == sorted(sent, key=lambda m: m.message_id)
        for cid in (1, 2, 3, 4, 5):
            assert [m for m in received if m.conversation_id == cid] == [
                m for m in sent if m.conversation_id == cid
            ]
        marker = accepted(9, 0)
        await offer(handoff.log, marker)
        await next_is_only(handoff.source, marker)
        await handoff.source.settled()


async def test_a_batch_carries_the_fence_of_its_messages_shard(handoff: Handoff) -> None:
    async with asyncio.timeout(BOUND_S):
        for cid in range(1, 9):
            await offer(handoff.log, accepted(cid, 0))
        for batch in await take(handoff.source, 8):
            if not handoff.fenced:
                assert batch.fence is None
                continue
            assert batch.fence is not None
            assert batch.fence.epoch == EPOCH
            assert {SHARDS.conversation(m.conversation_id) for m in batch.messages} == {batch.fence.shard}


async def test_a_batch_is_at_most_the_size_asked_and_the_rest_follows_in_order(handoff: Handoff) -> None:
    sent = [accepted(1, index) for index in range(10)]
    async with asyncio.timeout(BOUND_S):
        for message in sent:
            await offer(handoff.log, message)
        batches = await take(handoff.source, len(sent), max_messages=3)
        assert all(1 <= len(batch.messages) <= 3 for batch in batches)
        assert [m for batch in batches for m in batch.messages] == sent


async def test_a_retried_batch_comes_again_only_where_the_source_redelivers(handoff: Handoff) -> None:
    sent = [accepted(1, index) for index in range(3)]
    async with asyncio.timeout(BOUND_S):
        for message in sent:
            await offer(handoff.log, message)
        first = await handoff.source.next_batch(500)
        assert first.messages
        await first.retry(1)
        marker = accepted(9, 0)
        await offer(handoff.log, marker)
        if handoff.redelivers:
            expected = [*sent, marker]
        else:  # dropped: its senders were told to resend
            expected = [*(m for m in sent if m not in first.messages), marker]
        got = [m for batch in await take(handoff.source, len(expected)) for m in batch.messages]
        assert sorted(m.message_id for m in got) == sorted(m.message_id for m in expected)
        await handoff.source.settled()
