"""Committing a batch of accepted messages to the SQL store.

``seq`` is assigned here from a cache of each conversation's last seq, which is only sound
because the persister is the single writer of a conversation: a failed attempt forgets the
cached values it may have advanced. Resends are rare, so a batch is first inserted as if
none of it were stored: the unique (conversation_id, sender_id, cmid) constraint is the
check, and costs no query. Only when it fires is the batch committed again with a lookup of
what is already there.

The work is synchronous, on a SQLAlchemy ``Connection``, so the same code runs in the
SQLite writer process (``persister.commit_process``) and, through ``run_sync``, on the async
engine (``EngineCommitter``: PostgreSQL, or an in-memory SQLite).

A cluster's fenced commit (PostgreSQL only) checks its epoch first thing in the same
transaction (``persister.sql_fencing``); when the epoch is new to this writer, the seq cache
is dropped, since the shard's previous owner moved its conversations on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Protocol

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.stores import Fence
from persister.sql_fencing import STALLED_AFTER_S, ShardClaims, single_node
from persister.sql_schema import COLUMNS, messages, row_message

__all__ = ["BatchCommitter", "Committer", "EngineCommitter", "commit_batch", "fence_shard"]

logger = logging.getLogger(__name__)

_KEY_NAMES = ("conversation_id", "sender_id", "cmid")
_BY_KEY = select(*COLUMNS).where(
    messages.c.conversation_id == bindparam("conversation_id"),
    messages.c.sender_id == bindparam("sender_id"),
    messages.c.cmid == bindparam("cmid"),
)
_Key = tuple[int, int, str]


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


class BatchCommitter:
    """One writer's commits: the seq cache and the statements of one attempt."""

    def __init__(self, *, stalled_after_s: float = STALLED_AFTER_S) -> None:
        """``stalled_after_s``: how long a fenced transaction may sit idle (``persister.sql_fencing``)."""
        self._last_seq: dict[int, int] = {}
        self._claims = ShardClaims(stalled_after_s=stalled_after_s)

    def claim(self, connection: Connection, fence: Fence) -> None:
        """Check ``fence`` first thing in the caller's transaction (PostgreSQL); raises ``FencedOut``."""
        if self._claims.take(connection, fence):
            self._last_seq.clear()  # the shard's last owner may have moved any of its conversations

    def attempt(
        self,
        connection: Connection,
        batch: Sequence[AcceptedMessage],
        *,
        lookup: bool,
        fence: Fence | None = None,
    ) -> list[CommitResult]:
        """Assign seqs and insert, inside the caller's transaction; ``lookup`` finds resends first.

        If the transaction does not commit, the caller must ``forget`` the batch's seqs.
        """
        if fence is not None:
            self.claim(connection, fence)
        conversations = {message.conversation_id for message in batch}
        stored = _already_stored(connection, batch) if lookup else {}
        self._load_last_seqs(connection, conversations - self._last_seq.keys())
        results, rows = self._assign(batch, stored)
        if rows:
            connection.execute(messages.insert(), rows)
        return results

    def forget(self, batch: Sequence[AcceptedMessage]) -> None:
        """Drop the cached seqs of ``batch``'s conversations: the next attempt reads them back."""
        for message in batch:
            self._last_seq.pop(message.conversation_id, None)

    def _load_last_seqs(self, connection: Connection, conversation_ids: Collection[int]) -> None:
        if not conversation_ids:
            return
        self._last_seq.update(dict.fromkeys(conversation_ids, 0))
        query = (
            select(messages.c.conversation_id, func.max(messages.c.seq))
            .where(messages.c.conversation_id.in_(list(conversation_ids)))
            .group_by(messages.c.conversation_id)
        )
        for conversation_id, last in connection.execute(query):
            self._last_seq[conversation_id] = int(last)

    def _assign(
        self, batch: Sequence[AcceptedMessage], stored: dict[_Key, CommittedMessage]
    ) -> tuple[list[CommitResult], list[dict[str, object]]]:
        results: list[CommitResult] = []
        rows: list[dict[str, object]] = []
        for accepted in batch:
            key = (accepted.conversation_id, accepted.sender_id, accepted.cmid)
            existing = stored.get(key)
            if existing is not None:
                results.append(
                    CommitResult(existing, duplicate=True, sender_device_id=accepted.sender_device_id)
                )
                continue
            seq = self._last_seq[accepted.conversation_id] + 1
            self._last_seq[accepted.conversation_id] = seq
            committed = CommittedMessage(
                accepted.conversation_id,
                accepted.message_id,
                seq,
                accepted.sender_id,
                accepted.cmid,
                accepted.text,
                accepted.created_at_ms,
            )
            stored[key] = committed  # a resend inside the same batch is a duplicate too
            results.append(
                CommitResult(committed, duplicate=False, sender_device_id=accepted.sender_device_id)
            )
            rows.append(
                {
                    "conversation_id": committed.conversation_id,
                    "seq": committed.seq,
                    "message_id": committed.message_id,
                    "sender_id": committed.sender_id,
                    "cmid": committed.cmid,
                    "text": committed.text,
                    "created_at": committed.created_at_ms,
                }
            )
        return results, rows


def commit_batch(
    committer: BatchCommitter,
    connection: Connection,
    batch: Sequence[AcceptedMessage],
    fence: Fence | None = None,
) -> list[CommitResult]:
    """Commit ``batch`` in one transaction on ``connection`` (a second one if it holds a resend).

    Whatever fails — a statement or the COMMIT itself — the seqs the attempt advanced are
    forgotten, so the conversation's next message still gets the next seq actually stored.
    """
    try:
        return _transaction(committer, connection, batch, fence, lookup=False)
    except IntegrityError:
        logger.debug("a resend in a batch of %d; committing it again with a lookup", len(batch))
    return _transaction(committer, connection, batch, fence, lookup=True)


def fence_shard(committer: BatchCommitter, connection: Connection, fence: Fence) -> None:
    """Take ``fence.shard`` over (or check it is still ours) in a transaction of its own."""
    with connection.begin():
        committer.claim(connection, fence)


def _transaction(
    committer: BatchCommitter,
    connection: Connection,
    batch: Sequence[AcceptedMessage],
    fence: Fence | None,
    *,
    lookup: bool,
) -> list[CommitResult]:
    try:
        with connection.begin():
            return committer.attempt(connection, batch, lookup=lookup, fence=fence)
    except BaseException:
        committer.forget(batch)
        raise


def _already_stored(connection: Connection, batch: Sequence[AcceptedMessage]) -> dict[_Key, CommittedMessage]:
    # One indexed probe per key: SQLite answers a row-value IN (VALUES ...) with a scan of
    # the whole table, which made every commit cost in proportion to the history.
    found: dict[_Key, CommittedMessage] = {}
    for key in {(m.conversation_id, m.sender_id, m.cmid) for m in batch}:
        row = connection.execute(_BY_KEY, dict(zip(_KEY_NAMES, key, strict=True))).first()
        if row is not None:
            found[key] = row_message(row)
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
