"""What of the Cassandra store runs without a cluster: page arithmetic, buckets, hosts, connect errors.

The store itself runs the contract suite when ``HUBBUB_CASSANDRA_HOSTS`` names a cluster.
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from hubbub.envelope import AcceptedMessage
from launcher.migrate import migrate
from persister import SqlMessageStore
from persister.cassandra_store import bucket_ranges, connect, contact_point, plan_page
from persister.sql_database import create_engine

_ids = itertools.count(1)
_MAX_HEAD = 12


async def test_plan_page_returns_what_the_sql_store_returns(tmp_path: Path) -> None:
    """Every anchor, limit and length up to 12 against the reference backend, on SQLite."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}")
    await migrate(engine)
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
