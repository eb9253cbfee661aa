"""The SQL database of the message store, and where its commits run.

The launcher builds one engine with ``create_engine`` and shares it with the account store
(one database by default). The SQLite settings are made here because the message store is
what needs them: on a SQLite file, commits run in a writer process of their own
(``persister.sqlite_writer``) while this process reads history, so the file is in WAL mode
and both sides wait out each other's brief write locks. ``message_committer`` is that choice.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

import sqlalchemy
from sqlalchemy import URL, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from persister.commit_process import ProcessCommitter
from persister.sql_commit import Committer, EngineCommitter

__all__ = [
    "autocommit_reads",
    "create_engine",
    "is_in_memory",
    "message_committer",
    "retried_read",
    "sqlite_writer_engine",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Set while ``retried_read`` checks a connection out: it retries a read its connection failed,
# so the checkout need not ask the server first (``_ping_on_checkout``).
_RETRIED: ContextVar[bool] = ContextVar("retried_read", default=False)


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: object) -> None:
    # WAL lets readers (history queries) proceed while the writer process writes;
    # foreign keys are off by default in SQLite; busy_timeout rides out brief write locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _ping_on_checkout(dbapi_connection: DBAPIConnection, _record: object, _proxy: object) -> None:
    """``pool_pre_ping`` in one round trip: asyncpg's own ping is ``BEGIN; ;ROLLBACK`` (three).

    Every checkout of a pooled PostgreSQL connection asks the server, as ``pool_pre_ping`` does,
    so a connection whose session ended (a restart, ``pg_terminate_backend``) is replaced before
    use and the pool drops the others opened before it; but the statement goes to asyncpg
    outside a transaction (``AdaptedConnection.run_async``, SQLAlchemy's way for pool events), not
    wrapped in one as SQLAlchemy's asyncpg ping is (for pgbouncer's transaction mode, which this
    one statement does not need). A sync after a node's failover checks out two connections.
    Skipped for ``retried_read``, which answers a terminated connection by retrying instead.
    """
    if _RETRIED.get():
        return
    try:
        dbapi_connection.run_async(lambda connection: connection.fetchrow(";"))
    except Exception as exc:
        raise InvalidatePoolError(f"pinging a pooled connection failed: {exc!r}") from exc


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``, with SQLite made fit for concurrent use."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_size=10, max_overflow=20)
        event.listen(engine.sync_engine, "checkout", _ping_on_checkout)
        return engine
    path = _sqlite_file(parsed)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def retried_read(engine: AsyncEngine, read: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
    """``read`` on a connection of ``engine`` checked out without a ping, run again if it was dead.

    For reads only (running one twice changes nothing), in autocommit (``autocommit_reads``):
    the round trip of ``_ping_on_checkout`` was ~10 % of the API's CPU per ``GET /v1/sync``
    (two checkouts each). A pooled connection whose session the server ended (a restart,
    ``pg_terminate_backend``) fails its first statement instead; SQLAlchemy sees the disconnect
    and invalidates it and every connection of the pool opened before it, and ``read`` runs again
    on a connection checked out as every other is, pinged, so it still never fails the request.
    """
    token = _RETRIED.set(True)
    try:
        async with engine.connect() as connection:
            return await read(connection)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        logger.info("a pooled connection was closed by the server; reading again on another")
    finally:
        _RETRIED.reset(token)
    async with engine.connect() as connection:
        return await read(connection)


def is_in_memory(engine: AsyncEngine) -> bool:
    """Whether ``engine`` is an in-memory SQLite database (one per engine, so not to be opened twice)."""
    return _in_memory(engine.url)


def autocommit_reads(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for single-statement reads, without BEGIN and ROLLBACK round trips around each.

    Not for an in-memory SQLite database: it is one connection that every session and the
    committer share, and switching it to autocommit would commit another's open transaction.
    """
    if is_in_memory(engine):
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _in_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in {None, "", ":memory:"}


def message_committer(engine: AsyncEngine, *, log_level: str = "INFO") -> Committer:
    """Where the SQL message store on ``engine`` commits: a writer process of its own on a SQLite file.

    An in-memory SQLite database exists once per connection, so it (like PostgreSQL)
    commits on the shared engine. ``log_level`` is the writer process's.
    """
    path = _sqlite_file(engine.url)
    if path is None:
        return EngineCommitter(engine)
    return ProcessCommitter([sys.executable, "-m", "persister.sqlite_writer", path, log_level])


def _sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names; ``None`` for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or _in_memory(url):
        return None
    return url.database


def sqlite_writer_engine(path: str) -> sqlalchemy.Engine:
    """The writer process's synchronous engine on the SQLite file at ``path``."""
    engine = sqlalchemy.create_engine(make_url("sqlite://").set(database=path))
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine
