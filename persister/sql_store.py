"""The SQL message store (SQLite by default, PostgreSQL in production).

Rows are keyed by (conversation_id, seq), so a page is one index range scan; the unique
(conversation_id, sender_id, cmid) constraint is what recognises a resend, so a batch
without one costs no lookup. ``seq`` is assigned here from a cache of each conversation's last seq,
which is only sound because the persister is the single writer of a conversation: any
failed commit forgets the cached values it may have advanced.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.stores import MessagePage
from persister.sql_writer import AsyncEngineWriter, TransactionRunner

__all__ = ["SqlMessageStore"]

logger = logging.getLogger(__name__)

_metadata = MetaData()
messages = Table(
    "messages",
    _metadata,
    Column("conversation_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("message_id", BigInteger, nullable=False, unique=True),
    Column("sender_id", BigInteger, nullable=False),
    Column("cmid", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
_COLUMNS = (
    messages.c.conversation_id,
    messages.c.message_id,
    messages.c.seq,
    messages.c.sender_id,
    messages.c.cmid,
    messages.c.text,
    messages.c.created_at,
)
# Keeps each IN (...) list well under SQLite's bound-parameter limit.
_CHUNK = 300
_KEY_NAMES = ("conversation_id", "sender_id", "cmid")
_BY_KEY = select(*_COLUMNS).where(
    messages.c.conversation_id == bindparam("conversation_id"),
    messages.c.sender_id == bindparam("sender_id"),
    messages.c.cmid == bindparam("cmid"),
)


def _message(row: Sequence[Any]) -> CommittedMessage:
    conversation_id, message_id, seq, sender_id, cmid, text, created_at = row
    return CommittedMessage(conversation_id, message_id, seq, sender_id, cmid, text, created_at)


def _already_stored(
    connection: Connection, batch: Sequence[AcceptedMessage]
) -> dict[tuple[int, int, str], CommittedMessage]:
    # One indexed probe per key: SQLite answers a row-value IN (VALUES ...) with a scan of
    # the whole table, which made every commit cost in proportion to the history.
    found: dict[tuple[int, int, str], CommittedMessage] = {}
    for key in {(m.conversation_id, m.sender_id, m.cmid) for m in batch}:
        row = connection.execute(_BY_KEY, dict(zip(_KEY_NAMES, key, strict=True))).first()
        if row is not None:
            found[key] = _message(row)
    return found


class SqlMessageStore:
    """``MessageStore`` on SQLAlchemy Core; the engine is shared with the account store.

    Reads go through ``engine``; commits through ``writer`` (see ``persister.sql_writer``),
    by default a connection of the same engine.
    """

    def __init__(self, engine: AsyncEngine, writer: TransactionRunner | None = None) -> None:
        self._engine = engine
        self._writer = writer or AsyncEngineWriter(engine)
        self._last_seq: dict[int, int] = {}

    async def commit(self, batch: Sequence[AcceptedMessage]) -> list[CommitResult]:
        """Store ``batch`` in one transaction; see ``hubbub.stores.MessageStore.commit``.

        Resends are rare, so the batch is first inserted as if none of it were stored: the
        unique (conversation_id, sender_id, cmid) constraint is the check, and costs no
        query. Only when it fires is the batch committed again with a lookup of what is
        already there.
        """
        if not batch:
            return []
        try:
            return await self._writer.run(lambda connection: self._commit(connection, batch, lookup=False))
        except IntegrityError:
            logger.debug("a resend in a batch of %d; committing it again with a lookup", len(batch))
        return await self._writer.run(lambda connection: self._commit(connection, batch, lookup=True))

    def _commit(
        self, connection: Connection, batch: Sequence[AcceptedMessage], *, lookup: bool
    ) -> list[CommitResult]:
        conversations = {message.conversation_id for message in batch}
        try:
            stored = _already_stored(connection, batch) if lookup else {}
            self._load_last_seqs(connection, conversations - self._last_seq.keys())
            results, rows = self._assign(batch, stored)
            if rows:
                connection.execute(messages.insert(), rows)
        except BaseException:
            for conversation_id in conversations:
                self._last_seq.pop(conversation_id, None)
            raise
        return results

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
        self, batch: Sequence[AcceptedMessage], stored: dict[tuple[int, int, str], CommittedMessage]
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

    async def page(
        self,
        conversation_id: int,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> MessagePage:
        """Up to ``limit`` messages in ascending seq; see ``hubbub.stores.MessageStore.page``."""
        if around is not None:
            half = limit // 2
            older = await self._range(conversation_id, upper=around, limit=half + 1, descending=True)
            newer = await self._range(
                conversation_id, lower=around - 1, limit=limit - min(half, len(older)) + 1
            )
            kept_older = older[:half]
            kept_newer = newer[: limit - len(kept_older)]
            has_more = len(older) > half or len(newer) > len(kept_newer)
            return MessagePage(kept_older[::-1] + kept_newer, has_more)
        if after is not None:
            rows = await self._range(conversation_id, lower=after, limit=limit + 1)
            return MessagePage(rows[:limit], len(rows) > limit)
        rows = await self._range(conversation_id, upper=before, limit=limit + 1, descending=True)
        return MessagePage(rows[:limit][::-1], len(rows) > limit)

    async def _range(
        self,
        conversation_id: int,
        *,
        limit: int,
        lower: int | None = None,
        upper: int | None = None,
        descending: bool = False,
    ) -> list[CommittedMessage]:
        """Messages with lower < seq < upper, the first ``limit`` in the given order."""
        query = select(*_COLUMNS).where(messages.c.conversation_id == conversation_id)
        if lower is not None:
            query = query.where(messages.c.seq > lower)
        if upper is not None:
            query = query.where(messages.c.seq < upper)
        order = messages.c.seq.desc() if descending else messages.c.seq.asc()
        async with self._engine.connect() as connection:
            return [_message(row) for row in await connection.execute(query.order_by(order).limit(limit))]

    async def latest_seqs(self, conversation_ids: Collection[int]) -> dict[int, int]:
        """The highest seq of each conversation that has messages."""
        found: dict[int, int] = {}
        ids = list(conversation_ids)
        async with self._engine.connect() as connection:
            for start in range(0, len(ids), _CHUNK):
                query = (
                    select(messages.c.conversation_id, func.max(messages.c.seq))
                    .where(messages.c.conversation_id.in_(ids[start : start + _CHUNK]))
                    .group_by(messages.c.conversation_id)
                )
                found.update({cid: int(seq) for cid, seq in await connection.execute(query)})
        return found

    async def last_messages(self, conversation_ids: Collection[int]) -> dict[int, CommittedMessage]:
        """The newest message of each conversation that has one."""
        latest = await self.latest_seqs(conversation_ids)
        found: dict[int, CommittedMessage] = {}
        pairs = list(latest.items())
        async with self._engine.connect() as connection:
            for start in range(0, len(pairs), _CHUNK):
                chunk = pairs[start : start + _CHUNK]
                query = select(*_COLUMNS).where(tuple_(messages.c.conversation_id, messages.c.seq).in_(chunk))
                for row in await connection.execute(query):
                    message = _message(row)
                    found[message.conversation_id] = message
        return found

    async def unread_counts(self, read_up_to: Mapping[int, int], reader_id: int) -> dict[int, int]:
        """See ``hubbub.stores.MessageStore.unread_counts``: one indexed range per conversation."""
        counts = dict.fromkeys(read_up_to, 0)
        pairs = list(read_up_to.items())
        async with self._engine.connect() as connection:
            for start in range(0, len(pairs), _CHUNK):
                ranges = [
                    and_(messages.c.conversation_id == cid, messages.c.seq > seq)
                    for cid, seq in pairs[start : start + _CHUNK]
                ]
                query = (
                    select(messages.c.conversation_id, func.count())
                    .where(or_(*ranges), messages.c.sender_id != reader_id)
                    .group_by(messages.c.conversation_id)
                )
                counts.update({cid: int(count) for cid, count in await connection.execute(query)})
        return counts

    async def close(self) -> None:
        """Close the writer; the shared engine is disposed by its owner."""
        await self._writer.close()
