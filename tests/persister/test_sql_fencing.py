"""PostgreSQL's fencing beyond the contract suite: an owner paused inside a commit does not keep its shard."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy.exc import DBAPIError

import persister
from hubbub.envelope import AcceptedMessage
from hubbub.stores import Fence
from persister import SqlMessageStore
from persister.sql_commit import BatchCommitter
from persister.sql_database import create_engine
from tests.support.postgres import PostgresServer
from tests.support.schema import migrate

_databases = itertools.count()


async def test_an_owner_paused_mid_commit_loses_its_transaction_not_the_shard(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database(f"fencing{next(_databases)}")
    paused_engine, engine = create_engine(url), create_engine(url)
    try:
        await migrate(engine, persister.MIGRATIONS)
        store = SqlMessageStore(engine)
        paused = BatchCommitter(stalled_after_s=0.2)
        async with paused_engine.connect() as connection:
            await connection.begin()
            # The old owner passed its fence check (the shard's row is locked), then stopped running.
            await connection.run_sync(lambda sync: paused.claim(sync, Fence(2, 1)))
            await store.fence(Fence(2, 2))  # waits until the server ends the idle transaction, not forever
            with pytest.raises(DBAPIError):  # the paused owner resumes: its commit fails
                await connection.commit()
        [result] = await store.commit(
            [AcceptedMessage(60, 1, 7, "dev1", "a", "hi", 1_700_000_000_000)], fence=Fence(2, 2)
        )
        assert result.message.seq == 1
    finally:
        await paused_engine.dispose()
        await engine.dispose()
