"""The account store's answer to the broker at CONNECT: is this device still signed in?

Asked once per CONNECT, so a reconnect storm asks it thousands of times a second: the
concurrent questions are answered together, one ``SELECT ... WHERE id IN (...)`` per batch
(``BatchedLookup``), not one query each. The batch runs as one SQLAlchemy Core statement on a
pooled connection: an ORM session and its compile step per batch had cost about twice the
query itself (1.2 ms against 0.7 ms of CPU for 50 devices on SQLite), paid on every connect.

On a SQLite file even the Core statement costs ~0.7 ms of the event loop's CPU per batch,
whatever its size: aiosqlite hops to its thread and back for the pool's checkout, the cursor,
the execute, the fetch, the close and the rollback on return. With a connect storm's batches
of a few devices each, that was most of a connect's CPU. ``own_sqlite_reader`` reads instead
on a connection of the standard library's ``sqlite3`` kept by one thread of its own: one hop
per batch (~0.1 ms). The file is in WAL mode, so each query sees every committed sign-out and
holds no transaction open between queries (the connection is in autocommit). That thread and
its connection live until ``close`` (at the process's shutdown).
"""

from __future__ import annotations

import asyncio
import functools
import operator
import sqlite3
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import URL, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.db.models import Device
from api.store.batched import BatchedLookup
from hubbub.futures import forward_answer

__all__ = ["SqlDeviceSessions"]

# Compiled once (SQLAlchemy caches it by shape); the expanding parameter takes any number of ids.
_OWNERS = select(Device.id, Device.user_id).where(Device.id.in_(bindparam("ids", expanding=True)))
_BUSY_TIMEOUT_S = 5.0  # as the engine's connections: ride out a checkpoint's brief lock


class SqlDeviceSessions:
    """``hubbub.sessions.DeviceSessions`` over the devices table (an ended device has no row).

    ``own_sqlite_reader``: on a SQLite file, read on a ``sqlite3`` connection of its own
    (``_SqliteOwners``) rather than through the engine; ignored for any other database.
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, own_sqlite_reader: bool = False
    ) -> None:
        engine = sessions.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("SqlDeviceSessions needs sessions bound to an AsyncEngine")
        self._engine = engine
        path = _sqlite_file(engine.url) if own_sqlite_reader else None
        self._reader = None if path is None else _SqliteOwners(path)
        load = self._load_owners if self._reader is None else self._reader.load
        self._owners: BatchedLookup[str, int] = BatchedLookup(load)

    def is_signed_in(self, user_id: int, device_id: str) -> asyncio.Future[bool]:
        """Whether ``device_id`` is a device of ``user_id`` that has not been ended (a future: no task)."""
        owner = self._owners.get(device_id)
        answer: asyncio.Future[bool] = owner.get_loop().create_future()
        is_user = functools.partial(operator.eq, user_id)
        owner.add_done_callback(functools.partial(forward_answer, answer, is_user))
        return answer

    async def close(self) -> None:
        """Close the own SQLite reader's connection and end its thread, if there is one (at shutdown)."""
        if self._reader is not None:
            await self._reader.close()

    async def _load_owners(self, device_ids: Collection[str]) -> dict[str, int]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(_OWNERS, {"ids": list(device_ids)})
            return dict(rows.all())


def _sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names; ``None`` for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in {None, "", ":memory:"}:
        return None
    return url.database


class _SqliteOwners:
    """The owners of devices, read from a SQLite file on one thread with a connection of its own."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device-sessions")
        self._db: sqlite3.Connection | None = None  # opened, and only used, on that thread
        self._closed = False

    async def load(self, device_ids: Collection[str]) -> dict[str, int]:
        """``{device id: user id}`` of the devices among ``device_ids`` still signed in."""
        if self._closed:
            raise RuntimeError("the device sessions' SQLite reader is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read, list(device_ids))

    async def close(self) -> None:
        """Close the connection on its thread, after any read queued before; then the thread ends."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_db)
        finally:
            self._thread.shutdown()  # nothing is queued behind that: the join is immediate

    def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _read(self, device_ids: Sequence[str]) -> dict[str, int]:
        db = self._db
        if db is None:
            db = self._db = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        marks = ",".join("?" * len(device_ids))
        query = f"SELECT id, user_id FROM {Device.__tablename__} WHERE id IN ({marks})"  # noqa: S608 - only "?"s
        return dict(db.execute(query, device_ids).fetchall())
