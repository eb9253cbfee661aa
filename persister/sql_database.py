"""The SQL database of the message store, and where its commits run.

The launcher builds one engine with ``create_engine`` and shares it with the account store
(one database by default). The SQLite settings are made here because the message store is
what needs them: on a SQLite file, commits run in a writer process of their own
(``persister.sqlite_writer``) while this process reads history, so the file is in WAL mode
and both sides wait out each other's brief write locks. ``message_committer`` is that choice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy
from sqlalchemy import URL, CompoundSelect, Select, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from persister.commit_process import ProcessCommitter
from persister.sql_commit import Committer, EngineCommitter

__all__ = [
    "SQLITE_BUSY_TIMEOUT_S",
    "Read",
    "StatementReads",
    "autocommit_reads",
    "create_engine",
    "is_in_memory",
    "message_committer",
    "sqlite_writer_engine",
]

logger = logging.getLogger(__name__)

# What a read on a connection whose session had ended raises: the connection's own errors (class
# 08, "connection was closed in the middle of operation" among them), the server's shutdown or
# ``pg_terminate_backend`` (57P01-57P03), a reset socket.
_SESSION_ENDED = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
)

_Bind = tuple[str, bool, object]  # a parameter's name, whether the caller must give it, its value if not

_IDLE_CLOSE_S = 300.0  # asyncpg's default: a pool that was not warmed closes connections idle this long

Read = Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]]
"""What ``StatementReads`` runs: one SELECT (or a compound of them)."""


SQLITE_BUSY_TIMEOUT_S = 5.0
"""How long a SQLite write waits out another connection's lock before it fails (the default)."""


def _sqlite_pragmas(busy_timeout_s: float, dbapi_connection: DBAPIConnection, _record: object) -> None:
    # A new file's pages are 2 KiB, not 4: each commit rewrites every index leaf it touched (about
    # 150 at once under load, whatever its rows), so smaller leaves halve the WAL a message costs
    # (~3.2 -> ~1.4 KB) and cut the writer's CPU per message by ~3 µs. Only a file without tables
    # takes it (an existing one keeps its size). WAL lets readers (history queries) proceed while
    # the writer process writes; foreign keys are off by default in SQLite; busy_timeout rides out
    # brief write locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA page_size=2048")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _ping_on_checkout(dbapi_connection: DBAPIConnection, _record: object, _proxy: object) -> None:
    """``pool_pre_ping`` in one round trip: asyncpg's own ping is ``BEGIN; ;ROLLBACK`` (three).

    Every checkout of a pooled PostgreSQL connection asks the server, as ``pool_pre_ping`` does,
    so a connection whose session ended (a restart, ``pg_terminate_backend``) is replaced before
    use and the pool drops the others opened before it; but the statement goes to asyncpg
    outside a transaction (``AdaptedConnection.run_async``, SQLAlchemy's way for pool events), not
    wrapped in one as SQLAlchemy's asyncpg ping is (for pgbouncer's transaction mode, which this
    one statement does not need). A sync's reads do not come this way (``StatementReads``).
    """
    try:
        dbapi_connection.run_async(lambda connection: connection.fetchrow(";"))
    except Exception as exc:
        raise InvalidatePoolError(f"pinging a pooled connection failed: {exc!r}") from exc


def create_engine(url: str, *, sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> AsyncEngine:
    """An async engine for ``url``, with SQLite made fit for concurrent use.

    ``sqlite_busy_timeout_s``: how long a SQLite write waits for another's lock before it fails.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_size=10, max_overflow=20)
        event.listen(engine.sync_engine, "checkout", _ping_on_checkout)
        return engine
    path = _sqlite_file(parsed)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, sqlite_busy_timeout_s))
    return engine


class StatementReads:
    """One-statement reads that every device of a failed node asks at once, straight on asyncpg.

    ``GET /v1/sync`` is two such reads (the account store's, then ``MessageStore.catch_up``), and
    after a broker node dies every one of its devices asks it within seconds. Through SQLAlchemy's
    async layer each read paid a checkout, an execute and a close, each in a greenlet of its own
    (a switch, a 16 KiB stack) around SQLAlchemy's execution and result machinery: about a quarter
    of the API's CPU in a failover. On PostgreSQL a statement is compiled once by the engine's
    dialect (the Core statement stays the one source of the SQL) and run on a connection of an
    asyncpg pool of this reader's own, which prepares it once per connection; the pool's release
    sends nothing (a read in autocommit leaves no session state to reset). Elsewhere (SQLite) it
    runs on a connection of the engine, in autocommit where that is safe (``autocommit_reads``).

    A connection whose session the server ended (a restart, ``pg_terminate_backend``) is replaced
    on checkout once the event loop has seen it close; one that fails its statement because it
    died first makes the pool drop every connection opened before it (as SQLAlchemy does on a
    disconnect), and the read runs again on a new one: it still never fails the request.
    """

    def __init__(self, engine: AsyncEngine, *, pool_size: int = 10) -> None:
        self._engine = engine
        self._direct = engine.dialect.driver == "asyncpg"
        self._reads = autocommit_reads(engine)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._compiled: dict[int, tuple[Read, str, tuple[_Bind, ...]]] = {}

    async def rows(self, statement: Read, params: Mapping[str, object]) -> Sequence[Sequence[Any]]:
        """Every row ``statement`` selects with ``params``, each a sequence of its columns in order.

        For statements built once (module constants, cached builders): each is compiled on its
        first use and kept. Its parameters go to asyncpg as they are (ints and strings here), and
        its columns come back as asyncpg decodes them (no SQLAlchemy result processing).
        """
        if not self._direct:
            async with self._reads.connect() as connection:
                return (await connection.execute(statement, params)).all()
        sql, binds = self._compile(statement)
        args = [params[name] if required else params.get(name, value) for name, required, value in binds]
        pool = await self._connected()
        try:
            async with pool.acquire() as connection:
                return [tuple(record) for record in await connection.fetch(sql, *args)]
        except _SESSION_ENDED as exc:
            logger.info(
                "a pooled connection's session had ended (%s); reading again on a new one", type(exc).__name__
            )
        await pool.expire_connections()
        async with pool.acquire() as connection:
            return [tuple(record) for record in await connection.fetch(sql, *args)]

    def _compile(self, statement: Read) -> tuple[str, tuple[_Bind, ...]]:
        """``statement``'s PostgreSQL text and its parameters in ``$n`` order, compiled once."""
        kept = self._compiled.get(id(statement))
        if kept is not None and kept[0] is statement:
            return kept[1], kept[2]
        compiled = statement.compile(dialect=self._engine.dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a statement with parameters rendered at execution cannot be read directly")
        binds = tuple(
            (name, compiled.binds[name].required, compiled.binds[name].value)
            for name in compiled.positiontup or ()
        )
        self._compiled[id(statement)] = (statement, str(compiled), binds)
        return str(compiled), binds

    async def warm_up(self) -> None:
        """Open every connection of the pool now, and keep them open however long they idle.

        For a process that serves these reads (an API): the moment they are needed is when a
        broker node dies and all its devices sync at once, possibly hours after the last sync; a
        pool opened then spends the first of those seconds starting up to ``pool_size``
        PostgreSQL backends (a fork and an authentication each) while both the API and the
        server are busiest. A reader that is never warmed opens connections as reads need them,
        and closes those idle for five minutes (asyncpg's default). Elsewhere (SQLite) it does
        nothing.
        """
        if self._direct:
            await self._connected(warm=True)

    async def _connected(self, *, warm: bool = False) -> asyncpg.Pool:
        """The pool, opened on the first read (connections open as reads need them, up to ``pool_size``)."""
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                dsn = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
                self._pool = await asyncpg.create_pool(
                    dsn,
                    min_size=self._pool_size if warm else 0,
                    max_size=self._pool_size,
                    max_inactive_connection_lifetime=0 if warm else _IDLE_CLOSE_S,
                    reset=_nothing_to_reset,
                )
            return self._pool

    async def close(self) -> None:
        """Close the pool's connections (the engine is its owner's to dispose)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _nothing_to_reset(_connection: object) -> None:
    """A pooled connection's release: its reads ran in autocommit, so it holds no session state."""


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


def message_committer(
    engine: AsyncEngine, *, log_level: str = "INFO", busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S
) -> Committer:
    """Where the SQL message store on ``engine`` commits: a writer process of its own on a SQLite file.

    An in-memory SQLite database exists once per connection, so it (like PostgreSQL)
    commits on the shared engine. ``log_level`` and ``busy_timeout_s`` are the writer process's.
    """
    path = _sqlite_file(engine.url)
    if path is None:
        return EngineCommitter(engine)
    return ProcessCommitter(
        [sys.executable, "-m", "persister.sqlite_writer", path, log_level, str(busy_timeout_s)]
    )


def _sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names; ``None`` for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or _in_memory(url):
        return None
    return url.database


def sqlite_writer_engine(path: str, *, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> sqlalchemy.Engine:
    """The writer process's synchronous engine on the SQLite file at ``path``."""
    engine = sqlalchemy.create_engine(make_url("sqlite://").set(database=path))
    event.listen(engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout_s))
    return engine
