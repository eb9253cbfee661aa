"""The broker's questions to the account store, asked together: sign-ins at CONNECT, last activity.

Against a running platform's own database: a burst of CONNECTs asks whether each device is
signed in with one query, and the activity of many users is stored with one statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from api import SqlDeviceSessions, SqlDirectory
from tests.support.api import ApiClient, sign_in_questions
from tests.support.platform import Platform


@asynccontextmanager
async def _store(platform: Platform) -> AsyncIterator[tuple[async_sessionmaker[Any], list[str]]]:
    """Sessions on the platform's database, and the SQL statements they run."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{platform.data_dir / 'hubbub.db'}")
    statements: list[str] = []

    def executed(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", executed)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False), statements
    finally:
        await engine.dispose()


def test_concurrent_sign_in_checks_are_one_query(platform: Platform, api: ApiClient) -> None:
    questions, expected = sign_in_questions(api)

    async def ask() -> tuple[list[bool], list[str]]:
        async with _store(platform) as (sessions, statements):
            devices = SqlDeviceSessions(sessions)
            asked = (devices.is_signed_in(user, device) for user, device in questions)
            answers = await asyncio.gather(*asked)
            return list(answers), [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]

    answers, selects = asyncio.run(ask())
    assert answers == expected
    assert len(selects) == 1


def test_last_activity_of_many_users_is_one_statement_and_only_moves_forward(
    platform: Platform, api: ApiClient
) -> None:
    first, second = int(api.new_user().user_id), int(api.new_user().user_id)

    async def record() -> tuple[int | None, int | None, list[str]]:
        async with _store(platform) as (sessions, statements):
            directory = SqlDirectory(sessions)
            await directory.record_last_active({first: 2_000_000_000_000, second: 2_000_000_000_000})
            before = len(statements)
            await directory.record_last_active({first: 1_000_000_000_000, second: 2_100_000_000_000})
            updates = [sql for sql in statements[before:] if sql.lstrip().upper().startswith("UPDATE")]
            return await directory.last_active(first), await directory.last_active(second), updates

    first_at, second_at, updates = asyncio.run(record())
    assert (first_at, second_at) == (2_000_000_000_000, 2_100_000_000_000)
    assert len(updates) == 1
