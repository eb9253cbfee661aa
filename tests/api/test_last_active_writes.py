"""The users' last activity written as one statement per batch, only ever forward, on both account stores.

``SqlDirectory.record_last_active`` is one ``UPDATE ... FROM`` a table of the batch's pairs, a
different one on each database (SQLite's ``json_each``, PostgreSQL's ``unnest``): each is run
here against a database made by the account store's migrations, with a batch as large as the
broker's writer sends (500 users), users never seen, and times older than the stored ones.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

import api.db
from api import SqlDirectory
from api.db.models import User
from tests.support.postgres import PostgresServer
from tests.support.schema import migrate

BATCH = 500  # messaging/last_active.py's largest batch
FIRST_ID = 10_000
EARLIER, LATER = 1_700_000_000_000, 1_800_000_000_000


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The account store's tables, migrated, on a fresh SQLite file or PostgreSQL database, with users."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hubbub.db'}"
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        url = postgres.create_database(f"last_active_{uuid.uuid4().hex[:12]}")
    engine = create_async_engine(url)
    await migrate(engine, api.db.MIGRATIONS)
    users = [
        {"id": FIRST_ID + n, "username": f"u{n}", "display_name": "u", "password_hash": "-", "created_at": 0}
        for n in range(BATCH)
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(User), users)
    yield engine
    await engine.dispose()


async def _stored(engine: AsyncEngine) -> dict[int, int | None]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(User.id, User.last_active_at))
        return dict(rows.all())


async def test_a_batch_is_one_update_statement(engine: AsyncEngine) -> None:
    directory = SqlDirectory(async_sessionmaker(engine))
    statements: list[str] = []

    def executed(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", executed)
    await directory.record_last_active({FIRST_ID + n: EARLIER + n for n in range(BATCH)})
    event.remove(engine.sync_engine, "before_cursor_execute", executed)

    assert [sql.split()[0] for sql in statements if not sql.lstrip().upper().startswith("SELECT")] == [
        "UPDATE"
    ]
    assert await _stored(engine) == {FIRST_ID + n: EARLIER + n for n in range(BATCH)}


async def test_last_activity_only_moves_forward(engine: AsyncEngine) -> None:
    directory = SqlDirectory(async_sessionmaker(engine))
    half = BATCH // 2
    await directory.record_last_active({FIRST_ID + n: LATER for n in range(half)})  # the rest: never seen

    # Older times for the first half, newer for a quarter of it, first times for the rest.
    mixed = {FIRST_ID + n: EARLIER for n in range(BATCH)} | {
        FIRST_ID + n: LATER + 1 for n in range(half // 2)
    }
    await directory.record_last_active(mixed)

    stored = await _stored(engine)
    assert {at for user, at in stored.items() if user < FIRST_ID + half // 2} == {LATER + 1}
    assert {at for user, at in stored.items() if FIRST_ID + half // 2 <= user < FIRST_ID + half} == {LATER}
    assert {at for user, at in stored.items() if user >= FIRST_ID + half} == {EARLIER}
    assert await directory.last_active(FIRST_ID) == LATER + 1


async def test_unknown_users_are_no_error(engine: AsyncEngine) -> None:
    directory = SqlDirectory(async_sessionmaker(engine))
    await directory.record_last_active({1: LATER, FIRST_ID: LATER})  # user 1 has no account (any more)

    assert await directory.last_active(1) is None
    assert await directory.last_active(FIRST_ID) == LATER
