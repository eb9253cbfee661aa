"""Where the SQL store's write transactions run.

A commit is one synchronous unit of work on a SQLAlchemy ``Connection``: the store hands
the whole transaction over at once instead of awaiting each statement. On SQLite it runs
in a thread of its own, on one connection held for the life of the process: through
aiosqlite every statement, ``BEGIN``, ``COMMIT`` and the pool's reset was a hop to
aiosqlite's thread and back, ~0.75 ms of CPU per commit, five times the transaction
itself, and it is the persister's cost per batch when batches are small. SQLite has one
writer at a time anyway; WAL keeps the API's readers going beside it. Elsewhere
(PostgreSQL) the unit runs on the async engine through ``run_sync``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["AsyncEngineWriter", "SqliteWriter", "TransactionRunner"]

T = TypeVar("T")


class TransactionRunner(Protocol):
    """Runs ``work`` in one transaction: committed if it returns, rolled back if it raises."""

    async def run(self, work: Callable[[Connection], T]) -> T:
        """The result of ``work``."""
        ...

    async def close(self) -> None:
        """Release what the runner holds."""
        ...


class SqliteWriter:
    """Transactions on a dedicated thread and connection (``engine`` is a synchronous SQLite engine)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hubbub-sqlite-writer")
        self._connection: Connection | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction on the writer's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, work)

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        if self._connection is None:
            self._connection = self._engine.connect()
        with self._connection.begin():
            return work(self._connection)

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()


class AsyncEngineWriter:
    """Transactions on a connection of the shared async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction, through the async engine's ``run_sync``."""
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def close(self) -> None:
        """Nothing of its own: the shared engine is disposed by its owner."""
