"""The contract every ``MessageStore`` backend must keep, on real servers in every run.

SQLite, PostgreSQL (the session's server, a database per test) and Apache Cassandra (the
session's node, a keyspace per test). Fencing (a cluster's shard owners) runs on PostgreSQL
and Cassandra, with separate stores on one database standing for separate persisters;
SQLite, a single node's store, must refuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

import persister
from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.errors import CommitFailed
from hubbub.stores import Fence, FencedOut, MessageStore
from persister import SqlMessageStore, cassandra_store
from persister.sql_database import create_engine, message_committer
from tests.support.cassandra import CassandraServer
from tests.support.postgres import PostgresServer
from tests.support.schema import migrate

_ids = itertools.count(1_000)
_databases = itertools.count()


Opener = Callable[[], AbstractAsyncContextManager[MessageStore]]
"""Opens one more store on the test's database (as another process would): each its own connections."""


@contextlib.asynccontextmanager
async def _cassandra_store(server: CassandraServer, keyspace: str) -> AsyncIterator[MessageStore]:
    store = await cassandra_store.connect([server.host], keyspace)
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _sql_store(url: str) -> AsyncIterator[MessageStore]:
    engine = create_engine(url)
    sql = SqlMessageStore(engine, message_committer(engine))
    try:
        yield sql
    finally:
        await sql.close()
        await engine.dispose()


async def _opener(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """A migrated database of ``backend`` for the test, and how to open stores on it."""
    if backend == "cassandra":
        # A keyspace per test, left behind: the node is thrown away with the session, and a
        # DROP (a schema change on every node) costs more than the test.
        server: CassandraServer = request.getfixturevalue("cassandra")
        keyspace = f"contract_{uuid.uuid4().hex}"
        async with _cassandra_store(server, keyspace) as first:
            assert isinstance(first, cassandra_store.CassandraMessageStore)
            await cassandra_store.migrate(first.session, keyspace)
        return lambda: _cassandra_store(server, keyspace)
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        url = postgres.create_database(f"contract{next(_databases)}")
    engine = create_engine(url)
    try:
        await migrate(engine, persister.MIGRATIONS)
    finally:
        await engine.dispose()
    return lambda: _sql_store(url)


@pytest.fixture(params=["sqlite", "postgres", "cassandra"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    async with (await _opener(request.param, request, tmp_path))() as opened:
        yield opened


@pytest.fixture(params=["postgres", "cassandra"])
async def open_fenced(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """The backends a cluster's persisters share, which check fences."""
    return await _opener(request.param, request, tmp_path)


def accepted(conversation_id: int, cmid: str, sender_id: int = 7, text: str = "hi") -> AcceptedMessage:
    return AcceptedMessage(conversation_id, next(_ids), sender_id, "dev1", cmid, text, 1_700_000_000_000)


async def test_seqs_are_dense_per_conversation_in_batch_order(store: MessageStore) -> None:
    results = await store.commit([accepted(1, "a"), accepted(2, "b"), accepted(1, "c")])
    assert [(r.message.conversation_id, r.message.seq) for r in results] == [(1, 1), (2, 1), (1, 2)]
    later = await store.commit([accepted(1, "d")])
    assert later[0].message.seq == 3


async def test_a_cmid_is_stored_once_per_sender_and_conversation(store: MessageStore) -> None:
    [first] = await store.commit([accepted(5, "same")])
    [again, other_sender, twice_in_batch, twice_again] = await store.commit(
        [accepted(5, "same"), accepted(5, "same", sender_id=8), accepted(5, "new"), accepted(5, "new")]
    )
    assert again.duplicate
    assert again.message == first.message
    assert not other_sender.duplicate
    assert (twice_in_batch.duplicate, twice_again.duplicate) == (False, True)
    assert twice_again.message == twice_in_batch.message
    page = await store.page(5, limit=10)
    assert [m.seq for m in page.messages] == [1, 2, 3]


async def test_text_survives_exactly(store: MessageStore) -> None:
    text = "🎉 naïve \u0000 ∑" + "x" * 100_000
    await store.commit([accepted(9, "t", text=text.replace("\u0000", ""))])
    [message] = (await store.page(9, limit=1)).messages
    assert message.text == text.replace("\u0000", "")


async def test_paging(store: MessageStore) -> None:
    await store.commit([accepted(3, f"m{i}") for i in range(10)])

    async def seqs(**anchor: int) -> tuple[list[int], bool]:
        page = await store.page(3, limit=anchor.pop("limit", 3), **anchor)
        return [m.seq for m in page.messages], page.has_more

    assert await seqs() == ([8, 9, 10], True)
    assert await seqs(before=4) == ([1, 2, 3], False)
    assert await seqs(after=8) == ([9, 10], False)
    assert await seqs(after=2) == ([3, 4, 5], True)
    assert await seqs(around=5, limit=4) == ([3, 4, 5, 6], True)
    assert await seqs(around=1, limit=4) == ([1, 2, 3, 4], True)
    assert await seqs(around=10, limit=4) == ([8, 9, 10], True)
    assert await seqs(after=10) == ([], False)


async def test_latest_last_and_unread(store: MessageStore) -> None:
    await store.commit([accepted(11, "a", sender_id=1), accepted(11, "b", sender_id=2), accepted(12, "c")])
    assert await store.latest_seqs([11, 12, 13]) == {11: 2, 12: 1}
    last = await store.last_messages([11, 12, 13])
    assert (last[11].cmid, last[12].cmid, 13 in last) == ("b", "c", False)
    # Unread: after the marker, not sent by the reader; a conversation without messages is 0.
    assert await store.unread_counts({11: 0, 12: 0, 13: 0}, reader_id=1) == {11: 1, 12: 1, 13: 0}
    assert await store.unread_counts({11: 1, 12: 1}, reader_id=2) == {11: 0, 12: 0}
    assert await store.unread_counts({11: 0}, reader_id=7) == {11: 2}


async def test_catch_up_past_cursors(store: MessageStore) -> None:
    await store.commit([accepted(31, f"a{i}") for i in range(5)] + [accepted(32, "b"), accepted(33, "c")])
    caught = await store.catch_up({31: 1, 32: 1, 33: 0, 34: 0}, limit=3)
    # 32 did not move past its cursor and 34 has no history: absent; 31 stops short of its head.
    assert {cid: (c.latest_seq, [m.seq for m in c.messages]) for cid, c in caught.items()} == {
        31: (5, [2, 3, 4]),
        33: (1, [1]),
    }
    assert [m.cmid for m in caught[31].messages] == ["a1", "a2", "a3"]
    many = dict.fromkeys(range(1000, 1250), 0)  # more conversations than one statement takes
    await store.commit([accepted(1_249, "last")])
    assert {cid: c.latest_seq for cid, c in (await store.catch_up(many, limit=1)).items()} == {1_249: 1}
    assert await store.catch_up({}, limit=1) == {}


async def test_a_failed_commit_leaves_no_trace_and_seqs_stay_dense(store: MessageStore) -> None:
    await store.commit([accepted(20, "ok")])
    clash = AcceptedMessage(20, 10**19, 7, "dev1", "x", "hi", 0)  # message_id out of BIGINT range
    with pytest.raises(Exception):  # noqa: B017, PT011 - each database words the overflow its own way
        await store.commit([accepted(20, "lost"), clash])
    [after] = await store.commit([accepted(20, "next")])
    assert after.message.seq == 2
    assert [m.cmid for m in (await store.page(20, limit=10)).messages] == ["ok", "next"]


async def test_overlapping_commits_are_committed_in_call_order(store: MessageStore) -> None:
    # The persister sends the next batch while the last one commits.
    batches = [[accepted(21, f"o{i}a"), accepted(21, f"o{i}b")] for i in range(5)]
    results = await asyncio.gather(*(store.commit(batch) for batch in batches))
    assert [[r.message.seq for r in batch] for batch in results] == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]
    assert [m.cmid for m in (await store.page(21, limit=20)).messages] == [
        f"o{i}{half}" for i in range(5) for half in "ab"
    ]


async def test_a_stale_owner_is_fenced_out_and_leaves_nothing_visible(open_fenced: Opener) -> None:
    async with open_fenced() as old, open_fenced() as new, open_fenced() as other:
        [first] = await old.commit([accepted(40, "a")], fence=Fence(3, 1))
        [second] = await new.commit([accepted(40, "b")], fence=Fence(3, 2))  # takes the shard over
        assert (first.message.seq, second.message.seq) == (1, 2)
        with pytest.raises(FencedOut):
            await old.commit([accepted(40, "stale"), accepted(41, "stale")], fence=Fence(3, 1))
        with pytest.raises(FencedOut):  # and stays out, even from another store
            await other.commit([accepted(40, "late")], fence=Fence(3, 1))
        third, resent = await new.commit([accepted(40, "c"), accepted(40, "b")], fence=Fence(3, 2))
        assert (third.message.seq, resent.duplicate, resent.message) == (3, True, second.message)
        page = await other.page(40, limit=10)
        assert [(m.seq, m.cmid) for m in page.messages] == [(1, "a"), (2, "b"), (3, "c")]
        assert await other.latest_seqs([40, 41]) == {40: 3}


async def test_an_owner_taking_a_shard_back_continues_after_the_other_owner(open_fenced: Opener) -> None:
    """A store's cached seqs are stale once another owner committed: a new epoch reloads them."""
    async with open_fenced() as first, open_fenced() as second:
        await first.commit([accepted(42, "a"), accepted(43, "a")], fence=Fence(4, 1))
        await second.commit([accepted(42, "b")], fence=Fence(4, 2))
        await second.fence(Fence(4, 2))  # the same epoch again: still the owner, nothing changes
        await first.fence(Fence(4, 3))
        [after] = await first.commit([accepted(42, "c")], fence=Fence(4, 3))
        assert after.message.seq == 3
        with pytest.raises(FencedOut):
            await second.commit([accepted(43, "late")], fence=Fence(4, 2))
        assert [m.cmid for m in (await second.page(42, limit=10)).messages] == ["a", "b", "c"]


async def test_fence_takes_a_shard_over_before_any_batch(open_fenced: Opener) -> None:
    """A new owner fences, then reads the last seqs: nothing of the stale owner lands after that read."""
    async with open_fenced() as old, open_fenced() as new:
        await old.commit([accepted(44, "a")], fence=Fence(5, 7))
        await new.fence(Fence(5, 8))
        assert await new.latest_seqs([44]) == {44: 1}
        with pytest.raises(FencedOut):
            await old.commit([accepted(44, "stale")], fence=Fence(5, 7))
        with pytest.raises(FencedOut):  # the old owner cannot take it back with its old epoch
            await old.fence(Fence(5, 7))
        with pytest.raises(FencedOut):  # nor a store that never held the shard
            await new.fence(Fence(5, 6))
        [next_one] = await new.commit([accepted(44, "b")], fence=Fence(5, 8))
        assert next_one.message.seq == 2
        assert await old.latest_seqs([44]) == {44: 2}


async def test_two_writers_racing_for_one_shard_keep_every_ack_once(open_fenced: Opener) -> None:
    """The old owner keeps committing while a new owner takes the shard over mid-stream."""
    acked: list[CommitResult] = []
    refused: list[str] = []
    old_started = asyncio.Event()

    async def old_owner(old: MessageStore) -> None:
        for i in range(40):
            batch = [accepted(45, f"old{i}a"), accepted(46, f"old{i}b")]
            try:
                acked.extend(await old.commit(batch, fence=Fence(9, 5)))
            except FencedOut:
                refused.extend(m.cmid for m in batch)
                return
            finally:
                old_started.set()

    async def new_owner(new: MessageStore) -> None:
        await old_started.wait()
        for i in range(20):
            acked.extend(await new.commit([accepted(45 + i % 2, f"new{i}")], fence=Fence(9, 6)))

    async with open_fenced() as old, open_fenced() as new:
        await asyncio.gather(old_owner(old), new_owner(new))
        history = [m for cid in (45, 46) for m in (await new.page(cid, limit=1_000)).messages]
    for cid in (45, 46):
        seqs = [m.seq for m in history if m.conversation_id == cid]
        assert seqs == list(range(1, len(seqs) + 1))  # dense
    assert sorted((r.message.conversation_id, r.message.seq, r.message.cmid) for r in acked) == [
        (m.conversation_id, m.seq, m.cmid) for m in history
    ]
    assert refused, "the old owner was never fenced out"
    assert not {m.cmid for m in history} & set(refused)


async def test_sqlite_serves_one_node_and_refuses_a_fence(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with (await _opener("sqlite", request, tmp_path))() as store:
        with pytest.raises(CommitFailed, match="single node") as refused:
            await store.commit([accepted(47, "a")], fence=Fence(3, 1))
        assert not isinstance(refused.value, FencedOut)  # no newer owner: the setup is wrong
        with pytest.raises(CommitFailed, match="single node") as refused:
            await store.fence(Fence(3, 1))
        assert not isinstance(refused.value, FencedOut)
        [unfenced] = await store.commit([accepted(47, "b")])
        assert unfenced.message.seq == 1
        assert [m.cmid for m in (await store.page(47, limit=10)).messages] == ["b"]
