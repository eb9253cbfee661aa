"""Committing a batch of accepted messages to the SQL store.

``seq`` is assigned here from a cache of each conversation's last seq, which is only sound
because the persister is the single writer of a conversation: a failed attempt forgets the
cached values it may have advanced. Resends are rare, so a batch is first inserted as if
none of it were stored: the unique (conversation_id, sender_id, cmid) constraint is the
check, and costs no query. Only when it fires is the batch committed again with a lookup of
what is already there.

The work is synchronous, through ``Statements`` (the few statements a commit runs), so the
same code runs in the SQLite writer process (``persister.commit_process``, on its ``sqlite3``
connection itself: ``SqliteStatements``) and, through ``run_sync``, on the async engine
(``EngineCommitter``: PostgreSQL, or an in-memory SQLite, on a SQLAlchemy ``Connection``:
``ConnectionStatements``). Why the writer process skips SQLAlchemy: its transaction and its
``executemany`` cost ~80 µs of Python per commit around SQLite's own ~20, which a commit of a
few messages (a chat at a moderate rate) paid per message.

Per message it does as little as it can, since on SQLite this is about a third of the
platform's CPU per chat message: the rows are tuples inserted with one ``executemany`` of the
dialect's compiled ``INSERT`` (``exec_driver_sql``: no per-row parameter processing, which cost
as much as SQLite's own insert), and what a commit answers per message is its new ``seq``
(an ``Outcome``), turned into a ``CommitResult`` only where one is needed (``committed_results``).

A cluster's fenced commit (PostgreSQL only) checks its epoch first thing in the same
transaction (``persister.sql_fencing``); when the epoch is new to this writer, the seq cache
is dropped, since the shard's previous owner moved its conversations on.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Select, bindparam, func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.stores import Fence
from persister.sql_fencing import STALLED_AFTER_S, ShardClaims, single_node
from persister.sql_schema import COLUMNS, messages, row_message

__all__ = [
    "BatchCommitter",
    "Committer",
    "ConnectionStatements",
    "EngineCommitter",
    "Outcome",
    "SqliteStatements",
    "Statements",
    "commit_batch",
    "commit_outcomes",
    "committed_results",
    "fence_shard",
]

logger = logging.getLogger(__name__)

_KEY_NAMES = ("conversation_id", "sender_id", "cmid")
_BY_KEY = select(*COLUMNS).where(
    messages.c.conversation_id == bindparam("conversation_id"),
    messages.c.sender_id == bindparam("sender_id"),
    messages.c.cmid == bindparam("cmid"),
)
_Key = tuple[int, int, str]
# Rows read back are held as plain sequences in a list (``all()``), never as what ``execute`` types
# a row: mypy sees SQLAlchemy's ``Row`` as a tuple, so this module, compiled (``build_compiled.py``),
# would check that each ``Row`` it handles is a tuple, and fail.
_ReadRow = Sequence[Any]
# The columns of a row as ``_assign`` builds it, in the order of the table's compiled INSERT.
_ROW_COLUMNS = ("conversation_id", "seq", "message_id", "sender_id", "cmid", "text", "created_at")
_Row = tuple[int, int, int, int, str, str, int]
# Each engine's dialect's compiled INSERT, by the dialect's id (the dialect kept: an id may be reused).
_INSERTS: dict[int, tuple[Dialect, str]] = {}
# A resend's unique cmid key refused the insert: SQLAlchemy's error, or sqlite3's own (the writer process).
_REFUSED_AS_RESEND = (IntegrityError, sqlite3.IntegrityError)

Outcome = int | CommittedMessage
"""What committing one accepted message did: stored it with this new ``seq``, or found it
stored already (a resend): the message stored then."""


class Committer(Protocol):
    """What the SQL store commits through."""

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        """See ``hubbub.stores.MessageStore.commit``."""
        ...

    async def fence(self, fence: Fence) -> None:
        """See ``hubbub.stores.MessageStore.fence``."""
        ...

    async def close(self) -> None:
        """Release what the committer holds."""
        ...


class Statements(Protocol):
    """The statements a commit attempt runs, on one connection, inside one ``transaction``."""

    def in_transaction(self, work: Callable[[], list[Outcome]]) -> list[Outcome]:
        """``work()`` in one transaction: committed if it returns, rolled back if it or the COMMIT raises."""
        ...

    def claim(self, claims: ShardClaims, fence: Fence) -> bool:
        """``ShardClaims.take`` in this transaction (PostgreSQL); refused where fences are not kept."""
        ...

    def last_seqs(self, conversation_ids: Collection[int]) -> Sequence[_ReadRow]:
        """(conversation_id, max(seq)) of each of ``conversation_ids`` that has messages."""
        ...

    def stored(self, key: _Key) -> Sequence[_ReadRow]:
        """The message stored under (conversation_id, sender_id, cmid), as ``COLUMNS`` (one row at most)."""
        ...

    def insert(self, rows: list[_Row]) -> None:
        """Insert ``rows`` (``_ROW_COLUMNS`` order) in one ``executemany``."""
        ...


class ConnectionStatements:
    """``Statements`` on a SQLAlchemy ``Connection`` (PostgreSQL, an in-memory SQLite, the tests)."""

    __slots__ = ("connection",)

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def in_transaction(self, work: Callable[[], list[Outcome]]) -> list[Outcome]:
        """See ``Statements.in_transaction``: SQLAlchemy's transaction on the connection."""
        with self.connection.begin():
            return work()

    def claim(self, claims: ShardClaims, fence: Fence) -> bool:
        """See ``Statements.claim``."""
        return claims.take(self.connection, fence)

    def last_seqs(self, conversation_ids: Collection[int]) -> Sequence[_ReadRow]:
        """See ``Statements.last_seqs``."""
        rows: Sequence[_ReadRow] = self.connection.execute(_last_seqs_query(conversation_ids)).all()
        return rows

    def stored(self, key: _Key) -> Sequence[_ReadRow]:
        """See ``Statements.stored``."""
        rows: Sequence[_ReadRow] = self.connection.execute(
            _BY_KEY, dict(zip(_KEY_NAMES, key, strict=True))
        ).all()
        return rows

    def insert(self, rows: list[_Row]) -> None:
        """The dialect's compiled INSERT, positional: no per-row parameter processing."""
        dialect = self.connection.dialect
        kept = _INSERTS.get(id(dialect))
        if kept is None or kept[0] is not dialect:
            kept = _INSERTS[id(dialect)] = (dialect, _insert_sql(dialect))
        self.connection.exec_driver_sql(kept[1], rows)


class SqliteStatements:
    """``Statements`` straight on a ``sqlite3`` connection: the SQLite writer process's.

    The connection keeps the standard library's default transaction handling (as SQLAlchemy's
    pysqlite dialect does): the INSERT begins the transaction, ``commit`` ends it. The
    statements are the SQLAlchemy ones, compiled once for SQLite.
    """

    __slots__ = ("_by_key", "_db", "_insert", "_last_seq")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        dialect = sqlite.dialect()
        self._insert = _insert_sql(dialect)
        by_key = _BY_KEY.compile(dialect=dialect)
        if tuple(by_key.positiontup or ()) != _KEY_NAMES:
            raise RuntimeError(f"the lookup by key does not take its parameters in {_KEY_NAMES} order")
        self._by_key = str(by_key)
        self._last_seq = str(_LAST_SEQ.compile(dialect=dialect))

    def in_transaction(self, work: Callable[[], list[Outcome]]) -> list[Outcome]:
        """See ``Statements.in_transaction``."""
        db = self._db
        try:
            outcomes = work()
            db.commit()
        except BaseException:
            db.rollback()
            raise
        return outcomes

    def claim(self, claims: ShardClaims, fence: Fence) -> bool:
        """Refused: a SQLite file serves a single node (``persister.sql_fencing.single_node``)."""
        del claims
        raise single_node(fence)

    def last_seqs(self, conversation_ids: Collection[int]) -> Sequence[_ReadRow]:
        """See ``Statements.last_seqs``: one indexed probe per conversation, its statement compiled once."""
        found: list[_ReadRow] = []
        for conversation_id in conversation_ids:
            (last,) = self._db.execute(self._last_seq, (conversation_id,)).fetchone()
            if last is not None:
                found.append((conversation_id, last))
        return found

    def stored(self, key: _Key) -> Sequence[_ReadRow]:
        """See ``Statements.stored``."""
        return self._db.execute(self._by_key, key).fetchall()

    def insert(self, rows: list[_Row]) -> None:
        """See ``Statements.insert``."""
        self._db.executemany(self._insert, rows)


_LAST_SEQ = select(func.max(messages.c.seq)).where(messages.c.conversation_id == bindparam("conversation_id"))


def _last_seqs_query(conversation_ids: Collection[int]) -> Select[tuple[int, int]]:
    return (
        select(messages.c.conversation_id, func.max(messages.c.seq))
        .where(messages.c.conversation_id.in_(list(conversation_ids)))
        .group_by(messages.c.conversation_id)
    )


def _insert_sql(dialect: Dialect) -> str:
    """The table's INSERT compiled for ``dialect``, with positional parameters in ``_ROW_COLUMNS`` order."""
    compiled = messages.insert().compile(dialect=dialect)
    if tuple(compiled.positiontup or ()) != _ROW_COLUMNS:  # e.g. a named paramstyle
        raise RuntimeError(f"{dialect.name}: the INSERT does not take rows in {_ROW_COLUMNS} order")
    return str(compiled)


class BatchCommitter:
    """One writer's commits: the seq cache and the statements of one attempt."""

    def __init__(self, *, stalled_after_s: float = STALLED_AFTER_S) -> None:
        """``stalled_after_s``: how long a fenced transaction may sit idle (``persister.sql_fencing``)."""
        self._last_seq: dict[int, int] = {}
        self._claims = ShardClaims(stalled_after_s=stalled_after_s)

    def claim(self, connection: Connection, fence: Fence) -> None:
        """Check ``fence`` first thing in the caller's transaction (PostgreSQL); raises ``FencedOut``."""
        self._claimed(self._claims.take(connection, fence))

    def attempt(
        self,
        statements: Statements,
        batch: Sequence[AcceptedMessage],
        *,
        lookup: bool,
        fence: Fence | None = None,
    ) -> list[Outcome]:
        """Assign seqs and insert, inside the caller's transaction; ``lookup`` finds resends first.

        Without ``lookup`` every message is taken for new: a resend (even one inside the batch)
        then fails the insert on the unique cmid key, and the caller tries again with it.
        If the transaction does not commit, the caller must ``forget`` the batch's seqs.
        """
        if fence is not None:
            self._claimed(statements.claim(self._claims, fence))
        conversations = {message.conversation_id for message in batch}
        self._load_last_seqs(statements, conversations - self._last_seq.keys())
        if lookup:
            outcomes, rows = self._assign_looked_up(batch, _already_stored(statements, batch))
        else:
            outcomes, rows = self._assign(batch)
        if rows:
            statements.insert(rows)
        return outcomes

    def _claimed(self, new_epoch: bool) -> None:
        if new_epoch:
            self._last_seq.clear()  # the shard's last owner may have moved any of its conversations

    def forget(self, batch: Sequence[AcceptedMessage]) -> None:
        """Drop the cached seqs of ``batch``'s conversations: the next attempt reads them back."""
        for message in batch:
            self._last_seq.pop(message.conversation_id, None)

    def _load_last_seqs(self, statements: Statements, conversation_ids: Collection[int]) -> None:
        if not conversation_ids:
            return
        self._last_seq.update(dict.fromkeys(conversation_ids, 0))
        for conversation_id, last in statements.last_seqs(conversation_ids):
            self._last_seq[conversation_id] = int(last)

    def _assign(self, batch: Sequence[AcceptedMessage]) -> tuple[list[Outcome], list[_Row]]:
        """Every message new: the next seq of its conversation, and its row."""
        last_seq = self._last_seq
        outcomes: list[Outcome] = []
        rows: list[_Row] = []
        for m in batch:
            seq = last_seq[m.conversation_id] + 1
            last_seq[m.conversation_id] = seq
            outcomes.append(seq)
            rows.append((m.conversation_id, seq, m.message_id, m.sender_id, m.cmid, m.text, m.created_at_ms))
        return outcomes, rows

    def _assign_looked_up(
        self, batch: Sequence[AcceptedMessage], stored: dict[_Key, CommittedMessage]
    ) -> tuple[list[Outcome], list[_Row]]:
        """As ``_assign``, but a message already ``stored`` (or earlier in the batch) is a resend."""
        outcomes: list[Outcome] = []
        rows: list[_Row] = []
        for m in batch:
            key = (m.conversation_id, m.sender_id, m.cmid)
            existing = stored.get(key)
            if existing is not None:
                outcomes.append(existing)
                continue
            seq = self._last_seq[m.conversation_id] + 1
            self._last_seq[m.conversation_id] = seq
            outcomes.append(seq)
            rows.append((m.conversation_id, seq, m.message_id, m.sender_id, m.cmid, m.text, m.created_at_ms))
            stored[key] = CommittedMessage(  # a resend inside the same batch is a duplicate too
                m.conversation_id, m.message_id, seq, m.sender_id, m.cmid, m.text, m.created_at_ms
            )
        return outcomes, rows


def commit_batch(
    committer: BatchCommitter,
    connection: Connection,
    batch: Sequence[AcceptedMessage],
    fence: Fence | None = None,
) -> list[CommitResult]:
    """Commit ``batch`` on a SQLAlchemy ``connection`` (``commit_outcomes``); what it did to each message."""
    return committed_results(
        batch, commit_outcomes(committer, ConnectionStatements(connection), batch, fence)
    )


def commit_outcomes(
    committer: BatchCommitter,
    statements: Statements,
    batch: Sequence[AcceptedMessage],
    fence: Fence | None = None,
) -> list[Outcome]:
    """Commit ``batch`` in one transaction through ``statements`` (a second one if it holds a resend).

    Whatever fails — a statement or the COMMIT itself — the seqs the attempt advanced are
    forgotten, so the conversation's next message still gets the next seq actually stored.
    """
    try:
        return _transaction(committer, statements, batch, fence, lookup=False)
    except _REFUSED_AS_RESEND:
        logger.debug("a resend in a batch of %d; committing it again with a lookup", len(batch))
    return _transaction(committer, statements, batch, fence, lookup=True)


def committed_results(batch: Sequence[AcceptedMessage], outcomes: Sequence[Outcome]) -> list[CommitResult]:
    """The ``CommitResult`` of each accepted message of ``batch`` from its ``Outcome``."""
    results: list[CommitResult] = []
    for a, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, int):
            message = CommittedMessage(
                a.conversation_id, a.message_id, outcome, a.sender_id, a.cmid, a.text, a.created_at_ms
            )
            results.append(CommitResult(message, duplicate=False, sender_device_id=a.sender_device_id))
        else:
            results.append(CommitResult(outcome, duplicate=True, sender_device_id=a.sender_device_id))
    return results


def fence_shard(committer: BatchCommitter, connection: Connection, fence: Fence) -> None:
    """Take ``fence.shard`` over (or check it is still ours) in a transaction of its own."""
    with connection.begin():
        committer.claim(connection, fence)


def _transaction(
    committer: BatchCommitter,
    statements: Statements,
    batch: Sequence[AcceptedMessage],
    fence: Fence | None,
    *,
    lookup: bool,
) -> list[Outcome]:
    try:
        return statements.in_transaction(
            lambda: committer.attempt(statements, batch, lookup=lookup, fence=fence)
        )
    except BaseException:
        committer.forget(batch)
        raise


def _already_stored(statements: Statements, batch: Sequence[AcceptedMessage]) -> dict[_Key, CommittedMessage]:
    # One indexed probe per key: SQLite answers a row-value IN (VALUES ...) with a scan of
    # the whole table, which made every commit cost in proportion to the history.
    found: dict[_Key, CommittedMessage] = {}
    for key in {(m.conversation_id, m.sender_id, m.cmid) for m in batch}:
        rows = statements.stored(key)
        if rows:  # one at most: the key is unique
            found[key] = row_message(rows[0])
    return found


class EngineCommitter:
    """Commits on a connection of the shared async engine (PostgreSQL, or an in-memory SQLite).

    Fences are checked on PostgreSQL and refused on SQLite (``persister.sql_fencing``).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._committer = BatchCommitter()
        self._lock = asyncio.Lock()
        self._takes_fences = engine.dialect.name == "postgresql"

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        """See ``hubbub.stores.MessageStore.commit``: one batch at a time, in call order."""
        if fence is not None and not self._takes_fences:
            raise single_node(fence)
        if not batch:
            return []
        async with self._lock, self._engine.connect() as connection:
            return await connection.run_sync(lambda sync: commit_batch(self._committer, sync, batch, fence))

    async def fence(self, fence: Fence) -> None:
        """See ``hubbub.stores.MessageStore.fence``: in call order with the commits."""
        if not self._takes_fences:
            raise single_node(fence)
        async with self._lock, self._engine.connect() as connection:
            await connection.run_sync(lambda sync: fence_shard(self._committer, sync, fence))

    async def close(self) -> None:
        """Nothing of its own: the shared engine is disposed by its owner."""
