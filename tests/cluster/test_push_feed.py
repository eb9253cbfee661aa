"""The committed feed's contract, over both implementations: in-process, and JetStream + leases.

What the notifier relies on: every committed result comes out, in commit order per conversation;
a batch handed back with ``retry`` comes out again; a settled batch does not. The NATS feed's own
guarantees (shards, malformed messages, a dead notifier's batches) follow the contract tests.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pytest
from nats.js import JetStreamContext

from cluster.committed import CommittedPublisher, ensure_committed_stream
from cluster.connection import ClusterConnection, NatsOptions
from cluster.leases import ShardLeases
from cluster.push_feed import NatsCommittedFeed
from hubbub import subjects
from hubbub.envelope import CommitResult, CommittedMessage
from hubbub.push_feed import (
    CommittedBatch,
    CommittedFeed,
    InProcessCommittedFeed,
)
from hubbub.shards import ShardMap
from tests.support.nats import NatsCluster

SHARDS = 4
SHARD_MAP = ShardMap(conversation_shards=SHARDS)
LEASE_TTL_S = 3.0
ACK_WAIT_S = 2.0
PATIENCE_S = 30.0  # a bound on waiting for an event, never a measurement
_T = TypeVar("_T")
_conversation_ids = itertools.count(int(uuid.uuid4().hex[:8], 16) * 1_000)


def result(conversation_id: int, seq: int, *, duplicate: bool = False) -> CommitResult:
    message = CommittedMessage(
        conversation_id=conversation_id,
        message_id=conversation_id * 1_000 + seq,
        seq=seq,
        sender_id=1,
        cmid=f"c{conversation_id}-{seq}",
        text=f"message {seq}",
        created_at_ms=1_800_000_000_000 + seq,
    )
    return CommitResult(message, duplicate, "device-1")


def conversations_on(shards: int) -> list[int]:
    """One conversation id on each of ``shards`` different shards, never used before.

    New ids each time: the stream drops a ``Nats-Msg-Id`` (conversation, seq) it saw within its
    duplicate window, even from an earlier test.
    """
    found: dict[int, int] = {}
    cid = next(_conversation_ids)
    while len(found) < shards:
        found.setdefault(SHARD_MAP.conversation(cid), cid)
        cid = next(_conversation_ids)
    return list(found.values())


async def within(awaitable: Awaitable[_T]) -> _T:
    async with asyncio.timeout(PATIENCE_S):
        return await awaitable


async def fresh_committed_stream(js: JetStreamContext) -> None:
    """The committed stream, emptied of what earlier tests left (tests share the cluster).

    The shards' durable consumers stay: purged messages are not redelivered, and new ones follow.
    """
    await ensure_committed_stream(js, 3)
    await js.purge_stream(subjects.COMMITTED_STREAM)


async def publish(js: JetStreamContext, results: Sequence[CommitResult]) -> None:
    """What a shard's persister does after a commit: one stream message per result."""
    await CommittedPublisher(js, SHARD_MAP).publish(results)


async def open_feed(js: JetStreamContext, owner: str, group: str) -> NatsCommittedFeed:
    return await NatsCommittedFeed.open(
        js,
        owner_id=owner,
        group=group,
        shards=SHARDS,
        replicas=3,
        lease_ttl_s=LEASE_TTL_S,
        ack_wait_s=ACK_WAIT_S,
        fetch_timeout_s=0.5,
    )


@dataclass
class Channel:
    """A persister's end (``publish``) and the notifier's end (``feed``) of one implementation."""

    publish: Callable[[Sequence[CommitResult]], Awaitable[None]]
    feed: CommittedFeed


@pytest.fixture(params=["in_process", "nats"])
async def channel(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Channel]:
    if request.param == "in_process":
        local = InProcessCommittedFeed()

        async def hand_over(results: Sequence[CommitResult]) -> None:
            local.committed(results)

        yield Channel(hand_over, local)
        return
    cluster: NatsCluster = request.getfixturevalue("nats_cluster")  # started only for this variant
    conn = await ClusterConnection.connect(NatsOptions(servers=tuple(cluster.urls), name="contract"))
    await fresh_committed_stream(conn.js)
    feed = await open_feed(conn.js, "notifier-a", unique)
    try:
        assert feed.leases is not None
        assert sorted(feed.leases.owned) == list(range(SHARDS))  # the only notifier takes every shard

        async def persist(results: Sequence[CommitResult]) -> None:
            await publish(conn.js, results)

        yield Channel(persist, feed)
    finally:
        await feed.close()
        await conn.close()


async def collect(feed: CommittedFeed, count: int) -> list[CommittedBatch]:
    """Batches until ``count`` results came out."""
    batches: list[CommittedBatch] = []
    while sum(len(batch.results) for batch in batches) < count:
        batches.append(await within(feed.next_batch()))
    return batches


async def test_every_result_comes_out_in_commit_order_per_conversation(channel: Channel) -> None:
    first, second = conversations_on(2)
    await channel.publish([result(first, seq) for seq in (1, 2, 3)])
    await channel.publish([result(second, 1), result(first, 4, duplicate=True), result(second, 2)])

    batches = await collect(channel.feed, 6)
    seen = [each for batch in batches for each in batch.results]
    assert [r.message.seq for r in seen if r.message.conversation_id == first] == [1, 2, 3, 4]
    assert [r.message.seq for r in seen if r.message.conversation_id == second] == [1, 2]
    assert [r.duplicate for r in seen if r.message.seq == 4] == [True]  # the reader skips duplicates
    for batch in batches:
        batch.settle()


async def test_a_batch_handed_back_comes_out_again(channel: Channel) -> None:
    (cid,) = conversations_on(1)
    await channel.publish([result(cid, 1), result(cid, 2)])
    batches = await collect(channel.feed, 2)
    for batch in batches:
        batch.retry(0.1)

    again = await collect(channel.feed, 2)
    assert [r.message.seq for batch in again for r in batch.results] == [1, 2]
    for batch in again:
        batch.settle()


async def test_a_settled_batch_does_not_come_out_again(channel: Channel) -> None:
    (cid,) = conversations_on(1)
    await channel.publish([result(cid, 1)])
    (batch,) = await collect(channel.feed, 1)
    batch.settle()
    await channel.publish([result(cid, 2)])
    (later,) = await collect(channel.feed, 1)
    assert [r.message.seq for r in later.results] == [2]
    later.settle()


# -- the NATS feed's own guarantees -------------------------------------------------------------


async def test_each_batch_holds_one_shard_and_a_malformed_message_is_dropped(
    conn: ClusterConnection, unique: str
) -> None:
    await fresh_committed_stream(conn.js)
    conversations = conversations_on(SHARDS)
    await conn.js.publish(subjects.committed(SHARD_MAP.conversation(conversations[0])), b"{not json")
    await publish(conn.js, [result(cid, seq) for cid in conversations for seq in (1, 2)])
    feed = await open_feed(conn.js, "notifier-a", unique)
    try:
        batches = await collect(feed, 2 * SHARDS)
        for batch in batches:
            assert {SHARD_MAP.conversation(r.message.conversation_id) for r in batch.results} == {batch.shard}
            batch.settle()
        await within(feed.wait_settled())
        assert feed.fetched == 2 * SHARDS
        assert feed.healthy
    finally:
        await feed.close()


# -- the in-process feed's own, and the wire format ---------------------------------------------


async def test_the_in_process_feed_drops_the_oldest_batches_beyond_its_capacity() -> None:
    feed = InProcessCommittedFeed(capacity=3)
    for seq in (1, 2, 3, 4):
        feed.committed([result(1, seq)])
    feed.committed([])  # nothing to push: no batch
    seqs = [(await within(feed.next_batch())).results[0].message.seq for _ in range(3)]
    assert seqs == [2, 3, 4]


async def test_a_feed_consumes_the_shards_of_leases_composed_elsewhere(
    conn: ClusterConnection, unique: str
) -> None:
    await fresh_committed_stream(conn.js)
    (cid,) = conversations_on(1)
    feed = NatsCommittedFeed(conn.js, ack_wait_s=ACK_WAIT_S, fetch_timeout_s=0.5)
    feed.start()
    leases = await ShardLeases.open(
        conn.js,
        group=unique,
        replicas=3,
        owner_id="notifier-a",
        shards=SHARDS,
        ttl_s=LEASE_TTL_S,
        on_gained=feed.gained,
        on_lost=feed.lost,
    )
    try:
        await leases.start()
        await publish(conn.js, [result(cid, 1)])
        (batch,) = await collect(feed, 1)
        assert batch.shard == SHARD_MAP.conversation(cid)
        batch.settle()
        await within(feed.wait_settled())
        assert feed.healthy
        await leases.stop()  # every shard released: its consumer stops
        assert feed.healthy
    finally:
        await leases.stop()
        await feed.close()


async def test_no_more_than_max_in_pipeline_messages_are_handed_out_unsettled(
    conn: ClusterConnection, unique: str
) -> None:
    await fresh_committed_stream(conn.js)
    (cid,) = conversations_on(1)
    feed = await NatsCommittedFeed.open(
        conn.js,
        owner_id="notifier-a",
        group=unique,
        shards=SHARDS,
        replicas=3,
        lease_ttl_s=LEASE_TTL_S,
        ack_wait_s=ACK_WAIT_S,
        batch_size=1,
        fetch_timeout_s=0.5,
        max_in_pipeline=2,
    )
    try:
        await publish(conn.js, [result(cid, seq) for seq in (1, 2, 3)])
        first, second = await collect(feed, 2)
        third = asyncio.create_task(feed.next_batch())
        assert feed.fetched == 2  # the third waits in JetStream, or for room here
        first.settle()
        last = await within(third)
        assert [b.results[0].message.seq for b in (first, second, last)] == [1, 2, 3]
        second.settle()
        last.settle()
        await within(feed.wait_settled())
    finally:
        await feed.close()
