"""A sync's one-statement reads (``StatementReads``): straight on asyncpg, again on a dead connection.

``GET /v1/sync`` reads through ``StatementReads``: on PostgreSQL on an asyncpg pool of its own,
outside SQLAlchemy's async layer. A connection whose session the server ends in the middle of a
read must not fail the request: the read runs again on a new connection, and the connections
opened before are dropped. Here the read itself ends its own session (``pg_terminate_backend`` of
the pooled connection's backend), so the first attempt dies mid-statement every time, and its
retry (a new backend) finds that pid gone.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from sqlalchemy import Integer, bindparam, column, func, literal, select, table, union_all

from persister.sql_database import StatementReads, create_engine
from tests.support.postgres import PostgresServer

_NAMES = itertools.count()

_BACKENDS_HERE = (
    select(func.count())
    .select_from(table("pg_stat_activity", column("datname")))
    .where(column("datname") == func.current_database())
)
"""How many server sessions the database has: the reader's pool's, since nothing else connected."""


async def test_a_read_whose_session_ends_mid_statement_is_read_again(postgres: PostgresServer) -> None:
    engine = create_engine(postgres.create_database(f"statement_reads_{next(_NAMES)}"))
    reads = StatementReads(engine, pool_size=2)
    try:
        ((first_pid,),) = await reads.rows(select(func.pg_backend_pid()), {})
        ((same_pid,),) = await reads.rows(select(func.pg_backend_pid()), {})
        assert same_pid == first_pid  # a released connection is the next one handed out

        end_it = select(func.pg_terminate_backend(bindparam("pid", type_=Integer)))
        assert await reads.rows(end_it, {"pid": first_pid}) == [(False,)]  # the retry: that pid is gone

        ((now_pid,),) = await reads.rows(select(func.pg_backend_pid()), {})
        assert now_pid != first_pid
    finally:
        await reads.close()
        await engine.dispose()


async def test_rows_are_the_same_on_sqlite_and_postgresql(postgres: PostgresServer, tmp_path: Path) -> None:
    """The statement is compiled once for asyncpg (its ``$n`` parameters in order, one reused)."""
    statement = union_all(
        select(bindparam("a", type_=Integer), literal("x")),
        select(bindparam("b", type_=Integer), literal("y")),
        select(bindparam("a", type_=Integer), literal("z")),
    )
    found = []
    for url in (
        postgres.create_database(f"statement_reads_{next(_NAMES)}"),
        f"sqlite+aiosqlite:///{tmp_path}/r.db",
    ):
        engine = create_engine(url)
        reads = StatementReads(engine)
        try:
            first = await reads.rows(statement, {"a": 1, "b": 2})  # compiled now
            again = await reads.rows(statement, {"a": 1, "b": 2})  # the kept compilation
            found += [[tuple(row) for row in first], [tuple(row) for row in again]]
        finally:
            await reads.close()
            await engine.dispose()
    assert found == [[(1, "x"), (2, "y"), (1, "z")]] * 4


async def test_a_warmed_up_reader_has_every_connection_open_before_its_first_read(
    postgres: PostgresServer,
) -> None:
    """The API warms its reader at start: a failover's syncs then find the backends already started."""
    counted = []
    for warm in (False, True):
        engine = create_engine(postgres.create_database(f"statement_reads_{next(_NAMES)}"))
        reads = StatementReads(engine, pool_size=3)
        try:
            if warm:
                await reads.warm_up()
            ((backends,),) = await reads.rows(_BACKENDS_HERE, {})
            counted.append(backends)
        finally:
            await reads.close()
            await engine.dispose()
    assert counted == [1, 3]  # cold: the read's own connection; warmed: all three, opened before it
