"""The persister tests' SQL message store: a migrated SQLite file of its own, with its writer process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import persister
from persister.sql_database import create_engine, message_committer
from persister.sql_store import SqlMessageStore
from tests.support.schema import migrate


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMessageStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await migrate(engine, persister.MIGRATIONS)
    sql = SqlMessageStore(engine, message_committer(engine))
    yield sql
    await sql.close()
    await engine.dispose()
