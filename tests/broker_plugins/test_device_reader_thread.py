"""The signed-in check's own SQLite reader: a bare thread answering each batch on its asker's loop.

``SqlDeviceSessions(own_sqlite_reader=True)`` reads on a thread of its own, handing each answer
back to the loop of the future it settles: a store asked from one event loop and then another
(one ``asyncio.run`` after another) answers both, and a batch's failure (the table is gone)
fails that batch and not the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from api import SqlDeviceSessions


def _database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE devices (id VARCHAR(24) PRIMARY KEY, user_id BIGINT)")
        db.executemany("INSERT INTO devices VALUES (?, ?)", [("phone", 1), ("tablet", 2)])


async def _ask(devices: SqlDeviceSessions, questions: list[tuple[int, str]]) -> list[bool]:
    return list(await asyncio.gather(*(devices.is_signed_in(user, device) for user, device in questions)))


def test_one_reader_answers_on_each_loop_that_asks_and_closes_from_another(tmp_path: Path) -> None:
    _database(tmp_path / "store.db")
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    devices = SqlDeviceSessions(async_sessionmaker(engine), own_sqlite_reader=True)
    questions = [(1, "phone"), (2, "phone"), (2, "tablet"), (1, "unknown")]
    assert asyncio.run(_ask(devices, questions)) == [True, False, True, False]
    assert asyncio.run(_ask(devices, questions[:2])) == [True, False]
    asyncio.run(devices.close())
    asyncio.run(engine.dispose())


def test_a_failed_read_fails_its_batch_and_the_reader_goes_on(tmp_path: Path) -> None:
    _database(tmp_path / "store.db")

    async def run() -> bool:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        devices = SqlDeviceSessions(async_sessionmaker(engine), own_sqlite_reader=True)
        try:
            assert await devices.is_signed_in(1, "phone")
            with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as db, db:
                db.execute("ALTER TABLE devices RENAME TO gone")
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await devices.is_signed_in(1, "phone")
            with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as db, db:
                db.execute("ALTER TABLE gone RENAME TO devices")
            return await devices.is_signed_in(2, "tablet")
        finally:
            await devices.close()
            await engine.dispose()

    assert asyncio.run(run())
