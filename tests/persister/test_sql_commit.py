"""SQL commits: a failure at COMMIT itself leaves seqs dense; SQLite refuses a fence, not ignores it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Connection, event, select

import persister
from hubbub.envelope import AcceptedMessage
from hubbub.errors import CommitFailed
from hubbub.stores import Fence
from persister import SqlMessageStore
from persister.sql_commit import BatchCommitter, commit_batch
from persister.sql_database import create_engine, sqlite_writer_engine
from persister.sql_schema import messages
from tests.support.schema import migrate


class CommitRefused(Exception):
    """Raised by the test's hook in place of a failing COMMIT (a full disk, a dropped connection)."""


def _accepted(index: int) -> AcceptedMessage:
    return AcceptedMessage(1, 100 + index, 7, "dev1", f"c{index}", "text", 1_700_000_000_000)


async def test_a_failed_commit_forgets_the_seqs_it_took(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    schema = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(schema, persister.MIGRATIONS)
    await schema.dispose()
    engine = sqlite_writer_engine(str(path))
    refuse = [False]

    @event.listens_for(engine, "commit")
    def fail_once(connection: Connection) -> None:
        if refuse[0]:
            refuse[0] = False
            connection.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
            raise CommitRefused

    committer = BatchCommitter()
    try:
        with engine.connect() as connection:
            commit_batch(committer, connection, [_accepted(0)])
            refuse[0] = True
            with pytest.raises(CommitRefused):
                commit_batch(committer, connection, [_accepted(1)])
            [after] = commit_batch(committer, connection, [_accepted(2)])
            stored = connection.execute(
                select(messages.c.seq, messages.c.cmid).order_by(messages.c.seq)
            ).all()
    finally:
        engine.dispose()
    assert after.message.seq == 2
    assert [tuple(row) for row in stored] == [(1, "c0"), (2, "c2")]


async def test_sqlite_committing_on_the_shared_engine_refuses_a_fence_too(tmp_path: Path) -> None:
    """As an in-memory database does (no writer process): still a single node's store."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    try:
        await migrate(engine, persister.MIGRATIONS)
        store = SqlMessageStore(engine)
        with pytest.raises(CommitFailed, match="single node"):
            await store.commit([_accepted(0)], fence=Fence(shard=3, epoch=1))
        with pytest.raises(CommitFailed, match="single node"):
            await store.fence(Fence(shard=3, epoch=1))
        [result] = await store.commit([_accepted(1)])
        page = await store.page(1, limit=10)
    finally:
        await engine.dispose()
    assert result.message.seq == 1
    assert [message.cmid for message in page.messages] == ["c1"]
