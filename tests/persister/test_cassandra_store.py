"""The Cassandra store beyond the shared contract: page arithmetic, hosts, migrations, batching.

The migrations and batches run on the session's real node (``tests/support/cassandra.py``);
fencing is in the contract suite, shared with PostgreSQL.
"""

from __future__ import annotations

import itertools
import socket
import uuid
from pathlib import Path

import pytest
from cassandra.query import BatchStatement, BatchType, SimpleStatement  # type: ignore[import-untyped]

import persister
from hubbub.envelope import AcceptedMessage
from persister import SqlMessageStore, cassandra_store
from persister.cassandra_store import (
    MIGRATIONS,
    CassandraMessageStore,
    bucket_ranges,
    connect,
    consistency_level,
    contact_point,
    plan_page,
)
from persister.cassandra_store.batching import MAX_MUTATION_BYTES, Write, pack
from persister.sql_database import create_engine
from tests.support.cassandra import CassandraServer
from tests.support.schema import migrate

_ids = itertools.count(1)
_MAX_HEAD = 12


async def test_plan_page_returns_what_the_sql_store_returns(tmp_path: Path) -> None:
    """Every anchor, limit and length up to 12 against the reference backend, on SQLite."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}")
    await migrate(engine, persister.MIGRATIONS)
    sql = SqlMessageStore(engine)
    try:
        for head in range(_MAX_HEAD + 1):  # conversation head + 1 holds seqs 1..head
            batch = [AcceptedMessage(head + 1, next(_ids), 7, "d", f"m{i}", "hi", 0) for i in range(head)]
            await sql.commit(batch)
        compared = 0
        for head, limit in itertools.product(range(_MAX_HEAD + 1), range(6)):
            anchors: list[dict[str, int]] = [{}] + [
                {mode: anchor} for mode in ("before", "after", "around") for anchor in range(-1, head + 3)
            ]
            for anchor in anchors:
                page = await sql.page(head + 1, limit=limit, **anchor)
                plan = plan_page(head, limit=limit, **anchor)
                expected = ([m.seq for m in page.messages], page.has_more)
                assert (list(range(plan.first, plan.last + 1)), plan.has_more) == expected, (
                    head,
                    limit,
                    anchor,
                )
                compared += 1
        assert compared > 2_000
    finally:
        await engine.dispose()


def test_plan_page_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        plan_page(5, limit=-1)


def test_bucket_ranges_split_at_bucket_boundaries() -> None:
    assert bucket_ranges(1, 25, 10) == [(0, 1, 9), (1, 10, 19), (2, 20, 25)]
    assert bucket_ranges(10, 19, 10) == [(1, 10, 19)]
    assert bucket_ranges(9, 10, 10) == [(0, 9, 9), (1, 10, 10)]
    assert bucket_ranges(7, 7, 10_000) == [(0, 7, 7)]
    assert bucket_ranges(8, 7, 10) == []


@pytest.mark.parametrize(
    ("first", "last", "size"), [(1, 100, 7), (5, 5, 1), (9_999, 30_001, 10_000), (3, 40, 3)]
)
def test_bucket_ranges_cover_each_seq_once_in_its_own_bucket(first: int, last: int, size: int) -> None:
    ranges = bucket_ranges(first, last, size)
    covered = [seq for _, lo, hi in ranges for seq in range(lo, hi + 1)]
    assert covered == list(range(first, last + 1))
    assert all(lo // size == bucket == hi // size for bucket, lo, hi in ranges)
    assert len({bucket for bucket, _, _ in ranges}) == len(ranges)


def test_a_page_across_a_bucket_boundary_reads_both_buckets() -> None:
    plan = plan_page(25, limit=5, before=12)
    assert plan == (7, 11, True)
    assert bucket_ranges(plan.first, plan.last, 10) == [(0, 7, 9), (1, 10, 11)]
    newest = plan_page(25, limit=10)
    assert bucket_ranges(newest.first, newest.last, 10) == [(1, 16, 19), (2, 20, 25)]


def test_contact_points() -> None:
    assert contact_point("db1") == ("db1", 9042)
    assert contact_point(" db1:9043 ") == ("db1", 9043)
    assert contact_point("10.0.0.5:19042") == ("10.0.0.5", 19042)
    assert contact_point("[::1]:9043") == ("::1", 9043)
    assert contact_point("[::1]") == ("::1", 9042)
    assert contact_point("::1") == ("::1", 9042)
    with pytest.raises(ValueError, match="port"):
        contact_point("db1:cql")


async def test_connect_rejects_a_keyspace_name_that_cql_would_misread() -> None:
    with pytest.raises(ValueError, match="keyspace"):
        await connect(["127.0.0.1"], "history; DROP KEYSPACE x")
    with pytest.raises(ValueError, match="keyspace"):
        await connect(["127.0.0.1"], "History")  # unquoted CQL names fold to lower case


async def test_connect_to_nothing_fails_fast_with_the_driver_error_as_cause() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}") as raised:
        await connect([f"127.0.0.1:{port}"], "history")
    assert type(raised.value.__cause__).__name__ == "NoHostAvailable"


def test_consistency_levels_by_name() -> None:
    assert consistency_level("local_quorum") == consistency_level("LOCAL_QUORUM")
    with pytest.raises(ValueError, match="consistency"):
        consistency_level("MOST")


@pytest.fixture
async def keyspace(cassandra: CassandraServer) -> tuple[CassandraServer, str]:
    name = f"store_{uuid.uuid4().hex}"
    store = await connect([cassandra.host], name)
    try:
        await cassandra_store.migrate(store.session, name)
    finally:
        await store.close()
    return cassandra, name


async def test_migrating_twice_is_a_no_op(cassandra: CassandraServer) -> None:
    name = f"migrate_{uuid.uuid4().hex}"
    store = await connect([cassandra.host], name)
    try:
        assert await cassandra_store.migrate(store.session, name) == [m.version for m in MIGRATIONS]
        assert await cassandra_store.migrate(store.session, name) == []
        with pytest.raises(ValueError, match="replication"):
            await cassandra_store.migrate(store.session, name, replication="{'class': 'X'}; DROP KEYSPACE y")
    finally:
        await store.close()


def _message(cid: int, cmid: str, sender: int = 7) -> AcceptedMessage:
    return AcceptedMessage(cid, next(_ids), sender, "d", cmid, f"text of {cmid}", 1_700_000_000_000)


def _writes(sizes: list[tuple[str, int]]) -> list[Write]:
    return [Write(partition, SimpleStatement(f"-- {k}"), size) for k, (partition, size) in enumerate(sizes)]


def _shape(requests: list[object]) -> list[int]:
    """Statements per request; a lone statement (not a batch) counts as 0."""
    return [len(r) if isinstance(r, BatchStatement) else 0 for r in requests]


def test_small_rows_of_many_partitions_share_batches_of_ten_partitions() -> None:
    requests = pack(_writes([(f"p{k}", 100) for k in range(25)]))
    assert _shape(requests) == [10, 10, 5]
    assert all(r.is_idempotent and r.batch_type == BatchType.UNLOGGED for r in requests)  # type: ignore[attr-defined]


def test_rows_of_one_partition_stay_together_and_a_big_partition_goes_alone() -> None:
    sizes = [("small", 100), ("big", 3_000), ("small", 100), ("big", 3_000), ("other", 100)]
    assert _shape(pack(_writes(sizes))) == [2, 3]  # "big" (6 KB, one mutation) alone; the rest shared
    assert _shape(pack(_writes([("a", 3_000), ("b", 3_000)]))) == [0, 0]  # 4 KiB at most across partitions
    huge = _writes([("h", MAX_MUTATION_BYTES // 2)] * 5)
    assert _shape(pack(huge)) == [2, 2, 0]  # one partition, split below the commit log's limit


async def test_a_batch_costs_a_few_requests_and_resends_fewer(keyspace: tuple[CassandraServer, str]) -> None:
    """The cost the store's docstring states, counted on the driver: 100 messages, 13 requests."""
    server, name = keyspace
    store = await connect([server.host], name)
    sent: list[object] = []
    execute = store.session.execute_async

    def counting(query: object, *args: object, **kwargs: object) -> object:
        sent.append(query)
        return execute(query, *args, **kwargs)

    try:
        await store.commit([_message(50, "warm")])  # statements prepared, head cached
        store.session.execute_async = counting  # type: ignore[method-assign,assignment]
        batch = [_message(50, f"m{k}") for k in range(100)]
        results = await store.commit(batch)
        assert [r.message.seq for r in results] == list(range(2, 102))
        # 1 dedupe read + 1 batch of the conversation's rows + 10 of pointers + 1 head write
        assert len(sent) == 13
        sent.clear()
        resent = await store.commit(batch)
        assert [(r.duplicate, r.message) for r in resent] == [(True, r.message) for r in results]
        assert len(sent) == 2  # the dedupe read and one read of the rows it points at
    finally:
        store.session.execute_async = execute  # type: ignore[method-assign]
        await store.close()


async def test_resends_straddling_buckets_find_their_rows_in_each(
    keyspace: tuple[CassandraServer, str],
) -> None:
    server, name = keyspace
    owner = await connect([server.host], name)
    store = CassandraMessageStore(owner.session, name, bucket_size=10)
    try:
        first = await store.commit([_message(51, f"s{k}", sender=k % 3) for k in range(35)])
        again = await store.commit(
            [_message(51, f"s{k}", sender=k % 3) for k in (34, 3, 17, 9, 10)] + [_message(51, "new")]
        )
        assert [(r.duplicate, r.message.seq) for r in again] == [
            *((True, first[k].message.seq) for k in (34, 3, 17, 9, 10)),
            (False, 36),
        ]
        page = await store.page(51, limit=100)
        assert [m.seq for m in page.messages] == list(range(1, 37))
    finally:
        await owner.close()
