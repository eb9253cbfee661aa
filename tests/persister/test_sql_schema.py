"""The ``messages`` Table the SQL store queries through is exactly what the migrations create."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import MetaData, text

import persister
from persister.sql_database import create_engine
from persister.sql_schema import messages
from tests.support.postgres import PostgresServer
from tests.support.schema import differences, migrate

_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"schema{next(_databases)}")


async def test_the_migrated_database_matches_the_messages_table(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine, persister.MIGRATIONS)
        assert await differences(engine, messages.metadata) == []
    finally:
        await engine.dispose()


async def test_a_missing_resend_constraint_is_a_difference(tmp_path: Path) -> None:
    """The drift issue 11 found: the Table lacked the unique (conversation, sender, cmid)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}")
    without_resend_key = MetaData()
    copy = messages.to_metadata(without_resend_key)
    copy.constraints = {c for c in copy.constraints if c.name != "uq_messages_cmid"}
    try:
        await migrate(engine, persister.MIGRATIONS)
        assert [difference[0] for difference in await differences(engine, without_resend_key)] == [
            "remove_constraint"
        ]
    finally:
        await engine.dispose()


async def test_a_new_sqlite_file_has_small_pages_in_wal_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """New files get 2 KiB pages (half the WAL per commit); a file made with 4 KiB pages keeps them."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as made_before:
        made_before.execute("PRAGMA page_size=4096")
        made_before.execute("CREATE TABLE kept (x INTEGER)")
    for path, page_size in ((tmp_path / "new.db", 2048), (old, 4096)):
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await migrate(engine, persister.MIGRATIONS)
            async with engine.connect() as connection:
                assert await connection.scalar(text("PRAGMA page_size")) == page_size
                assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
        finally:
            await engine.dispose()
