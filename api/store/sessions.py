"""The account store's answer to the broker at CONNECT: is this device still signed in?

Asked once per CONNECT, so a reconnect storm asks it thousands of times a second: the
concurrent questions are answered together, one ``SELECT ... WHERE id IN (...)`` per batch
(``BatchedLookup``), not one query each. The batch runs as one SQLAlchemy Core statement on a
pooled connection: an ORM session and its compile step per batch had cost about twice the
query itself (1.2 ms against 0.7 ms of CPU for 50 devices on SQLite), paid on every connect.

On a SQLite file even the Core statement costs ~0.7 ms of the event loop's CPU per batch,
whatever its size: aiosqlite hops to its thread and back for the pool's checkout, the cursor,
the execute, the fetch, the close and the rollback on return. ``own_sqlite_reader`` reads
instead on a connection of the standard library's ``sqlite3`` kept by one thread of its own
(``_SqliteOwners``): one hop per batch. The file is in WAL mode, so each query sees every
committed sign-out and holds no transaction open between queries (the connection is in
autocommit). That thread and its connection live until ``close`` (at the process's shutdown).

What a batch costs was still a third of a connect's CPU in a connect storm (batches of ~7
devices), most of it around the query rather than in it: a ``ThreadPoolExecutor`` and
``wrap_future`` (their locks, condition and callbacks are Python code), and the GIL changing
hands at each ``sqlite3_step`` (one per row, each releasing and taking it back while the event
loop's thread wants it). So the reader is a bare thread on a ``SimpleQueue``, handing each answer
back with one ``call_soon_threadsafe``; its statement is one text whatever the batch's size (the
ids are one JSON array, ``json_each``) and answers with one row, the owners as one JSON object:
two steps per batch. And a caller's answer (is it this user's device?) is made where the batch
settles it (``BatchedLookup.ask``), with no second future per CONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import orjson
from sqlalchemy import URL, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.db.models import Device
from api.store.batched import BatchedLookup

__all__ = ["SqlDeviceSessions"]

T = TypeVar("T")

# Compiled once (SQLAlchemy caches it by shape); the expanding parameter takes any number of ids.
_OWNERS = select(Device.id, Device.user_id).where(Device.id.in_(bindparam("ids", expanding=True)))
# The own SQLite reader's: one text for any number of ids (a JSON array), one row of owners back.
_OWNERS_AS_JSON = (
    f"SELECT json_group_object(id, user_id) FROM {Device.__tablename__}"  # noqa: S608 - a constant
    " WHERE id IN (SELECT value FROM json_each(?))"
)
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
        return self._owners.ask(device_id, functools.partial(_owned_by, user_id))

    async def close(self) -> None:
        """Close the own SQLite reader's connection and end its thread, if there is one (at shutdown)."""
        if self._reader is not None:
            await self._reader.close()

    async def _load_owners(self, device_ids: Collection[str]) -> dict[str, int]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(_OWNERS, {"ids": list(device_ids)})
            return dict(rows.all())


def _owned_by(user_id: int, owner: int | None) -> bool:
    return owner == user_id


def _sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names; ``None`` for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in {None, "", ":memory:"}:
        return None
    return url.database


# The ids as a JSON array and where their owners go; or ``None`` and what is set once the thread ends.
_Job = tuple[str, "asyncio.Future[dict[str, int]]"] | tuple[None, "asyncio.Future[None]"]


class _SqliteOwners:
    """The owners of devices, read from a SQLite file on one thread with a connection of its own.

    The thread starts with the first ``load``; each answer goes back to the loop of the future
    it settles. ``close`` ends it (a daemon, so a process that never closes it is not kept alive
    by it).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def load(self, device_ids: Collection[str]) -> asyncio.Future[dict[str, int]]:
        """``{device id: user id}`` of the devices among ``device_ids`` still signed in (a future)."""
        if self._closed:
            raise RuntimeError("the device sessions' SQLite reader is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="device-sessions", daemon=True)
            self._thread.start()
        owners: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._jobs.put((orjson.dumps(list(device_ids)).decode(), owners))
        return owners

    async def close(self) -> None:
        """Close the connection on its thread, after any read queued before; then the thread ends."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.put((None, ended))
        await ended
        self._thread.join()  # it has closed its connection and only returns: the join is immediate

    def _serve(self) -> None:
        """The thread: each job's query, its answer handed back to its future's loop; until ``close``."""
        db: sqlite3.Connection | None = None
        while True:
            job = self._jobs.get()
            if job[0] is None:
                break
            ids, owners = job
            try:
                if db is None:
                    db = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
                (found,) = db.execute(_OWNERS_AS_JSON, (ids,)).fetchone()
                settle = functools.partial(_answer, owners, orjson.loads(found))
            except Exception as exc:  # noqa: BLE001 - handed to the batch that asked
                settle = functools.partial(_fail, owners, exc)
            _hand_back(owners, settle)
        if db is not None:
            db.close()
        _hand_back(job[1], functools.partial(_answer, job[1], None))


def _answer(future: asyncio.Future[T], value: T) -> None:
    """On the loop: ``future`` gets ``value`` (unless its waiter gave up)."""
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[T], exc: Exception) -> None:
    """On the loop: ``future`` raises ``exc`` (unless its waiter gave up)."""
    if not future.done():
        future.set_exception(exc)


def _hand_back(future: asyncio.Future[Any], settle: Callable[[], None]) -> None:
    """Run ``settle`` on ``future``'s loop (from the reader's thread); nothing to do once it is closed."""
    with contextlib.suppress(RuntimeError):
        future.get_loop().call_soon_threadsafe(settle)
