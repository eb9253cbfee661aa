"""The contract every ``MessageStore`` backend must keep, on real servers in every run.

SQLite, PostgreSQL (the session's server, a database per test) and Apache Cassandra (the
session's node, a keyspace per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import persister
from hubbub.envelope import AcceptedMessage
from hubbub.stores import MessageStore
from persister import SqlMessageStore, cassandra_store
from persister.sql_database import create_engine, message_committer
from tests.support.cassandra import CassandraServer
from tests.support.postgres import PostgresServer
from tests.support.schema import migrate

_ids = itertools.count(1_000)
_databases = itertools.count()


@contextlib.asynccontextmanager
async def _cassandra_store(server: CassandraServer) -> AsyncIterator[MessageStore]:
    # A keyspace per test, left behind: the node is thrown away with the session, and a
    # DROP (a schema change on every node) costs more than the test.
    keyspace = f"contract_{uuid.uuid4().hex}"
    store = await cassandra_store.connect([server.host], keyspace)
    try:
        await cassandra_store.migrate(store.session, keyspace)
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres", "cassandra"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    if request.param == "cassandra":
        async with _cassandra_store(request.getfixturevalue("cassandra")) as cassandra:
            yield cassandra
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create_database(f"contract{next(_databases)}")
    engine = create_engine(url)
    await migrate(engine, persister.MIGRATIONS)
    sql = SqlMessageStore(engine, message_committer(engine))
    yield sql
    await sql.close()
    await engine.dispose()


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
