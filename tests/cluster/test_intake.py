"""Persisters on real NATS: leases, fencing, takeover from the ack floor, replies, the committed stream.

The store is ``FencedStore``, an in-memory double honouring the ``MessageStore`` commit contract
(one row per (conversation, sender, cmid), dense seq, a fence refusing older epochs): the SQL
stores take no fence yet (branch ``fence`` brings PostgreSQL's), and these tests are about the
hand-off, not about a database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from cluster.accepted import NatsAcceptedLog, ensure_accepted_stream
from cluster.committed import CommitReplier, CommittedPublisher, ReplyListener, ensure_committed_stream
from cluster.connection import ClusterConnection
from cluster.intake import ShardIntake
from cluster.leases import ShardLeases
from hubbub import subjects
from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.errors import CommitFailed, Unavailable
from hubbub.shards import ShardMap
from hubbub.stores import CatchUp, Fence, FencedOut, MessagePage
from persister import Persister
from tests.cluster.test_accepted_contract import accepted, fresh_streams, nats_connection
from tests.support.nats import NatsCluster

SHARDS = ShardMap(conversation_shards=4)
TTL_S = 3.0
BOUND_S = 90.0  # the whole scenario on a loaded machine: generous, never a measurement


class FencedStore:
    """``MessageStore`` in memory with fencing: what the persister needs, checked like the real ones."""

    def __init__(self, shards: ShardMap) -> None:
        self._shards = shards
        self.rows: dict[tuple[int, int, str], CommittedMessage] = {}
        self.seqs: dict[int, int] = {}
        self.epochs: dict[int, int] = {}
        self.refused = 0
        self.fail_next = 0  # commits to fail (a database that refuses writes)
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()

    async def fence(self, fence: Fence) -> None:
        """Take the shard over for ``fence.epoch`` (refused if a newer epoch has it)."""
        async with self._lock:
            self._check(fence)

    def _check(self, fence: Fence) -> None:
        if fence.epoch < self.epochs.get(fence.shard, 0):
            self.refused += 1
            raise FencedOut(f"shard {fence.shard}: epoch {fence.epoch} is older than the owner's")
        self.epochs[fence.shard] = fence.epoch

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        async with self._lock:
            await asyncio.sleep(0)  # a commit takes a while: let the others run meanwhile
            if fence is not None:
                assert {self._shards.conversation(m.conversation_id) for m in batch} == {fence.shard}
                self._check(fence)
            if self.fail_next:
                self.fail_next -= 1
                raise CommitFailed("the database refuses writes (test)")
            results = []
            for message in batch:
                key = (message.conversation_id, message.sender_id, message.cmid)
                stored = self.rows.get(key)
                if stored is None:
                    seq = self.seqs[message.conversation_id] = self.seqs.get(message.conversation_id, 0) + 1
                    stored = self.rows[key] = CommittedMessage(
                        message.conversation_id,
                        message.message_id,
                        seq,
                        message.sender_id,
                        message.cmid,
                        message.text,
                        message.created_at_ms,
                    )
                    results.append(
                        CommitResult(stored, duplicate=False, sender_device_id=message.sender_device_id)
                    )
                else:
                    results.append(
                        CommitResult(stored, duplicate=True, sender_device_id=message.sender_device_id)
                    )
        async with self._changed:
            self._changed.notify_all()
        return results

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def page(
        self,
        conversation_id: int,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> MessagePage:
        del before, after, around  # the persister never reads
        rows = sorted(
            (m for m in self.rows.values() if m.conversation_id == conversation_id), key=lambda m: m.seq
        )
        return MessagePage(rows[-limit:], has_more=len(rows) > limit)

    async def latest_seqs(self, conversation_ids: Collection[int]) -> dict[int, int]:
        return {cid: self.seqs[cid] for cid in conversation_ids if cid in self.seqs}

    async def catch_up(self, cursors: Mapping[int, int], *, limit: int) -> dict[int, CatchUp]:
        del cursors, limit  # the persister never reads
        return {}

    async def last_messages(self, conversation_ids: Collection[int]) -> dict[int, CommittedMessage]:
        return {
            cid: (await self.page(cid, limit=1)).messages[-1] for cid in conversation_ids if cid in self.seqs
        }

    async def unread_counts(self, read_up_to: Mapping[int, int], reader_id: int) -> dict[int, int]:
        del read_up_to, reader_id
        return {}

    async def close(self) -> None:
        return None

    def dense(self) -> bool:
        by_conversation: dict[int, list[int]] = {}
        for message in self.rows.values():
            by_conversation.setdefault(message.conversation_id, []).append(message.seq)
        return all(sorted(seqs) == list(range(1, len(seqs) + 1)) for seqs in by_conversation.values())


@dataclass
class Node:
    """One persister process: its connection, lease holder, intake and persister."""

    name: str
    conn: ClusterConnection
    leases: ShardLeases
    intake: ShardIntake
    running: asyncio.Task[None]
    handed_on: list[CommitResult] = field(default_factory=list)

    async def stop(self) -> None:
        """A graceful stop: leases handed back, what is committing settled, then gone."""
        await self.leases.stop(release=True)
        await self.intake.settled()
        await self._end()

    async def crash(self) -> None:
        """Gone without a word: nothing settled, the leases left to expire."""
        self.running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.running
        await self.leases.stop(release=False)
        await self.conn.client.close()

    async def _end(self) -> None:
        self.running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.running
        await self.intake.close()
        await self.conn.close()


@dataclass
class Cluster:
    nats: NatsCluster
    conn: ClusterConnection
    group: str
    store: FencedStore
    nodes: list[Node] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def node(self, name: str) -> Node:
        conn = await nats_connection(self.nats, name)
        intake = ShardIntake(conn, replier=CommitReplier(conn.client), fence_store=self.store.fence)
        publisher = CommittedPublisher(conn.js, SHARDS)
        handed_on: list[CommitResult] = []

        async def on_committed(results: Sequence[CommitResult]) -> None:
            await publisher.publish(results)
            handed_on.extend(results)
            self.changed.set()

        persister = Persister(self.store, intake, on_committed, max_batch=20)
        running = asyncio.create_task(persister.run(), name=f"persister-{name}")

        def gained(shard: int, epoch: int) -> None:
            intake.shard_gained(shard, epoch)
            self.changed.set()

        def lost(shard: int, epoch: int) -> None:
            intake.shard_lost(shard, epoch)
            self.changed.set()

        leases = await ShardLeases.open(
            conn.js,
            group=self.group,
            replicas=3,
            owner_id=name,
            shards=SHARDS.conversation_shards,
            ttl_s=TTL_S,
            on_gained=gained,
            on_lost=lost,
        )
        node = Node(name, conn, leases, intake, running, handed_on)
        self.nodes.append(node)
        await leases.start()
        return node

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self.changed.clear()
            await self.changed.wait()


@pytest.fixture
async def cluster(nats_cluster: NatsCluster, conn: ClusterConnection, unique: str) -> AsyncIterator[Cluster]:
    await fresh_streams(conn)
    await ensure_accepted_stream(conn.js, replicas=3)
    await ensure_committed_stream(conn.js, replicas=3)
    world = Cluster(nats_cluster, conn, f"persister-{unique}", FencedStore(SHARDS))
    yield world
    for node in world.nodes:
        with contextlib.suppress(Exception):  # a crashed node's connection is closed already
            await node.leases.stop()
            await node._end()


async def offer_all(log: NatsAcceptedLog, messages: Sequence[AcceptedMessage]) -> None:
    for start in range(0, len(messages), 20):  # 20 devices sending at once
        await asyncio.gather(*(log.offer(m) for m in messages[start : start + 20]))


def burst(count: int) -> list[AcceptedMessage]:
    return [accepted(1 + index % 12, index) for index in range(count)]


async def committed_in_stream(conn: ClusterConnection) -> int:
    info = await conn.js.stream_info(subjects.COMMITTED_STREAM)
    return info.state.messages


@pytest.mark.parametrize("how", ["stop", "crash"])
async def test_a_persister_that_leaves_mid_burst_leaves_nothing_lost_or_stored_twice(
    cluster: Cluster, how: str
) -> None:
    sent = burst(400)
    log = NatsAcceptedLog(cluster.conn.js, SHARDS)
    async with asyncio.timeout(BOUND_S):
        a = await cluster.node("a")
        b = await cluster.node("b")
        await cluster.until(lambda: len(a.intake.owned) == len(b.intake.owned) == 2)
        await offer_all(log, sent[:200])
        await cluster.store.until(lambda: len(cluster.store.rows) >= 100)  # a is in the middle of it
        await (a.stop() if how == "stop" else a.crash())
        await offer_all(log, sent[200:])
        await cluster.until(lambda: len(b.intake.owned) == SHARDS.conversation_shards)
        assert b.intake.healthy
        cmids = {m.cmid for m in sent}
        await cluster.until(lambda: {r.message.cmid for r in b.handed_on + a.handed_on} >= cmids)
        await b.intake.settled()
    assert {key[2] for key in cluster.store.rows} == cmids  # nothing lost, and one row per cmid
    assert cluster.store.dense()
    assert await committed_in_stream(cluster.conn) == len(sent)  # republished ones deduplicated


async def test_a_stale_owner_is_fenced_out_and_the_new_owner_commits_its_messages(
    cluster: Cluster, nats_cluster: NatsCluster
) -> None:
    store = cluster.store
    shard = SHARDS.conversation(1)
    sent = [accepted(1, index) for index in range(5)]
    old_conn = await nats_connection(nats_cluster, "old")
    new_conn = await nats_connection(nats_cluster, "new")
    old, new = (
        ShardIntake(old_conn, fence_store=store.fence),
        ShardIntake(new_conn, fence_store=store.fence),
    )
    try:
        async with asyncio.timeout(BOUND_S):
            old.shard_gained(shard, 10)
            await offer_all(NatsAcceptedLog(cluster.conn.js, SHARDS), sent)
            stale = await old.next_batch(500)  # fetched, then the owner pauses past its lease
            new.shard_gained(shard, 11)
            taken = await new.next_batch(500)
            with pytest.raises(FencedOut):
                await store.commit(stale.messages, fence=stale.fence)
            await stale.fenced_out()
            assert shard not in old.owned
            got = list(taken.messages)
            results = await store.commit(taken.messages, fence=taken.fence)
            await taken.done(results)
            while len(got) < len(sent):
                more = await new.next_batch(500)
                await more.done(await store.commit(more.messages, fence=more.fence))
                got.extend(more.messages)
        assert [m.cmid for m in got] == [m.cmid for m in sent]  # from the ack floor, in order
        assert sorted(m.seq for m in store.rows.values()) == [1, 2, 3, 4, 5]
        assert store.refused == 1
    finally:
        for intake, connection in ((old, old_conn), (new, new_conn)):
            await intake.close()
            await connection.close()


async def test_a_failed_commit_comes_again_without_telling_the_senders(cluster: Cluster) -> None:
    told: list[AcceptedMessage] = []
    cluster.store.fail_next = 2
    node_conn = await nats_connection(cluster.nats, "solo")
    intake = ShardIntake(node_conn)
    for shard in range(SHARDS.conversation_shards):
        intake.shard_gained(shard, 1)
    handed_on: list[CommitResult] = []

    async def on_committed(results: Sequence[CommitResult]) -> None:
        handed_on.extend(results)
        cluster.changed.set()

    persister = Persister(
        cluster.store, intake, on_committed, on_failed=lambda batch, _ms: told.extend(batch), max_batch=5
    )
    running = asyncio.create_task(persister.run())
    sent = [accepted(2, index) for index in range(10)]
    try:
        async with asyncio.timeout(BOUND_S):
            await offer_all(NatsAcceptedLog(cluster.conn.js, SHARDS), sent)
            await cluster.until(lambda: {r.message.cmid for r in handed_on} == {m.cmid for m in sent})
            await intake.settled()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await intake.close()
        await node_conn.close()
    assert told == []
    assert cluster.store.dense()
    assert len(cluster.store.rows) == len(sent)


async def test_a_rest_submit_elsewhere_gets_its_commit_result_as_a_reply(
    cluster: Cluster, nats_cluster: NatsCluster
) -> None:
    api_conn = await nats_connection(nats_cluster, "api")
    replies: asyncio.Queue[CommitResult] = asyncio.Queue()

    def replied(results: Sequence[CommitResult]) -> None:
        for result in results:
            replies.put_nowait(result)

    listener = ReplyListener(api_conn.client, "api-1", replied)
    await listener.start()
    log = NatsAcceptedLog(api_conn.js, SHARDS, reply_to=listener.subject)
    try:
        async with asyncio.timeout(BOUND_S):
            node = await cluster.node("p")
            await cluster.until(lambda: len(node.intake.owned) == SHARDS.conversation_shards)
            mine, theirs = accepted(3, 1), accepted(3, 2)
            await log.offer(mine, reply=True)
            await log.offer(theirs)  # a device's send: nobody waits for a reply
            await cluster.until(lambda: len(node.handed_on) == 2)
            reply = await replies.get()
            await node.intake.settled()
        assert (reply.message.cmid, reply.message.seq, reply.duplicate) == (mine.cmid, 1, False)
        assert replies.empty()
    finally:
        await listener.stop()
        await api_conn.close()


async def test_an_idle_stale_owner_finds_the_consumer_is_not_its_own_and_stops(
    cluster: Cluster, nats_cluster: NatsCluster
) -> None:
    shard = SHARDS.conversation(1)
    old_conn = await nats_connection(nats_cluster, "old")
    new_conn = await nats_connection(nats_cluster, "new")
    old, new = ShardIntake(old_conn, idle_probe_s=0.2), ShardIntake(new_conn)
    try:
        async with asyncio.timeout(BOUND_S):
            old.shard_gained(shard, 10)
            reading = old._readers[shard].task
            await offer_all(NatsAcceptedLog(cluster.conn.js, SHARDS), [accepted(1, 0)])
            first = await old.next_batch(500)
            await first.done([])
            # The old owner goes on taking batches whose commits never land (a paused database
            # connection, say), and never hears of the new owner.
            stale = asyncio.create_task(old.next_batch(500))
            new.shard_gained(shard, 11)
            await offer_all(NatsAcceptedLog(cluster.conn.js, SHARDS), [accepted(1, 1)])
            got: list[str] = []
            while "c1-1" not in got:  # c1-0 too if its ack (sent, not awaited) came after the takeover
                got.extend(m.cmid for m in (await new.next_batch(500)).messages)
            await asyncio.wait([reading])  # its next idle probe found epoch 11's consumer
            assert shard not in old.owned
            stale.cancel()
    finally:
        for intake, connection in ((old, old_conn), (new, new_conn)):
            await intake.close()
            await connection.close()


async def test_an_offer_the_stream_cannot_take_is_unavailable(conn: ClusterConnection) -> None:
    await fresh_streams(conn)  # no stream at all: nothing answers the publish
    log = NatsAcceptedLog(conn.js, SHARDS, publish_timeout_s=0.5, attempt_timeout_s=0.1)
    with pytest.raises(Unavailable):
        await log.offer(accepted(1, 0))
    assert (log.published, log.failed) == (0, 1)
