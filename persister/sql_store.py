"""The SQL message store (SQLite by default, PostgreSQL in production).

Reads run on the shared async engine; commits go through a ``Committer``
(``persister.sql_commit``): on a SQLite file a writer process of its own
(``persister.commit_process``), elsewhere a connection of the same engine. A cluster's
fenced commits are checked on PostgreSQL and refused on SQLite (``persister.sql_fencing``).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    CompoundSelect,
    Integer,
    Select,
    and_,
    bindparam,
    func,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.stores import CatchUp, Fence, MessagePage
from persister.sql_commit import Committer, EngineCommitter
from persister.sql_database import StatementReads
from persister.sql_schema import COLUMNS, messages, row_message

__all__ = ["SqlMessageStore"]

# Keeps each IN (...) / OR list well under SQLite's bound-parameter limit.
_CHUNK = 300
# Conversations per catch-up statement: a UNION ALL of one part each, under SQLite's limit of
# 500 parts in a compound SELECT and of 32,766 bound parameters.
_CATCH_UP_CHUNK = 100
_WIDTH = len(COLUMNS)  # a catch-up row: a message's columns, then its conversation's newest seq


class SqlMessageStore:
    """``MessageStore`` on SQLAlchemy Core; the engine is shared with the account store."""

    def __init__(
        self, engine: AsyncEngine, committer: Committer | None = None, *, reads: StatementReads | None = None
    ) -> None:
        """A store on ``engine``, committing through ``committer``.

        ``reads``: the process's one-statement reader to share (a sync reads the account store and
        then history, one statement each, so one pool serves both), its owner's to close; by default
        one of the store's own on ``engine``.
        """
        self._engine = engine
        self._reads = reads or StatementReads(engine)
        self._closes_reads = reads is None
        self._committer = committer or EngineCommitter(engine)

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        """Store ``batch`` in one transaction; see ``hubbub.stores.MessageStore.commit``.

        With a fence, PostgreSQL checks its epoch in that transaction; SQLite refuses it
        (``CommitFailed``: it serves a single node).
        """
        return await self._committer.commit(batch, fence=fence)

    async def fence(self, fence: Fence) -> None:
        """Take ``fence.shard`` over; see ``hubbub.stores.MessageStore.fence`` (SQLite refuses)."""
        await self._committer.fence(fence)

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
        query = select(*COLUMNS).where(messages.c.conversation_id == conversation_id)
        if lower is not None:
            query = query.where(messages.c.seq > lower)
        if upper is not None:
            query = query.where(messages.c.seq < upper)
        order = messages.c.seq.desc() if descending else messages.c.seq.asc()
        async with self._engine.connect() as connection:
            return [row_message(row) for row in await connection.execute(query.order_by(order).limit(limit))]

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

    async def catch_up(self, cursors: Mapping[int, int], *, limit: int) -> dict[int, CatchUp]:
        """See ``hubbub.stores.MessageStore.catch_up``: one statement per 100 conversations.

        Each conversation is one part of a ``UNION ALL``: the first ``limit`` messages past its
        cursor (an index range) with its newest seq beside each (an index probe), so a
        conversation that did not move returns no row. Every device of a failed broker node asks
        it at once: on PostgreSQL it runs straight on asyncpg, in autocommit, read again on a new
        connection if the server had closed its one (``StatementReads``).
        """
        pairs = list(cursors.items())
        found: dict[int, CatchUp] = {}
        for start in range(0, len(pairs), _CATCH_UP_CHUNK):
            chunk = pairs[start : start + _CATCH_UP_CHUNK]
            values: dict[str, int] = {"limit": limit}
            for k, (cid, cursor) in enumerate(chunk):
                values[f"cid_{k}"], values[f"cursor_{k}"] = cid, cursor
            for row in await self._reads.rows(_catch_up_statement(len(chunk)), values):
                message = row_message(row[:_WIDTH])
                entry = found.get(message.conversation_id)
                if entry is None:
                    entry = found[message.conversation_id] = CatchUp(int(row[_WIDTH]), [])
                entry.messages.append(message)
        for entry in found.values():
            entry.messages.sort(key=lambda message: message.seq)
        return found

    async def last_messages(self, conversation_ids: Collection[int]) -> dict[int, CommittedMessage]:
        """The newest message of each conversation that has one."""
        latest = await self.latest_seqs(conversation_ids)
        found: dict[int, CommittedMessage] = {}
        pairs = list(latest.items())
        async with self._engine.connect() as connection:
            for start in range(0, len(pairs), _CHUNK):
                chunk = pairs[start : start + _CHUNK]
                # OR of (conversation, seq) pairs: each one an index probe, where SQLite scans the
                # whole table for a row-value IN (VALUES ...).
                keys = [and_(messages.c.conversation_id == cid, messages.c.seq == seq) for cid, seq in chunk]
                query = select(*COLUMNS).where(or_(*keys))
                for row in await connection.execute(query):
                    message = row_message(row)
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
        """Close the committer and its own direct reads' pool (a shared engine or reader is its owner's)."""
        await self._committer.close()
        if self._closes_reads:
            await self._reads.close()


@functools.cache
def _catch_up_statement(conversations: int) -> CompoundSelect[Any] | Select[Any]:
    """The catch-up of ``conversations`` conversations: a ``UNION ALL`` of one ``_past_cursor`` each.

    Built once per size (bound parameters ``cid_<k>``, ``cursor_<k>`` and ``limit``): every
    device syncing after a node's failover asks it, and building the statement's parts cost
    more in Python than running it.
    """
    parts = [_past_cursor(k) for k in range(conversations)]
    return parts[0] if len(parts) == 1 else union_all(*parts)


def _past_cursor(k: int) -> Select[Any]:
    """The first ``limit`` messages of conversation ``cid_<k>`` past ``cursor_<k>``, with its newest seq."""
    conversation_id = bindparam(f"cid_{k}", type_=BigInteger)
    heads = messages.alias("heads")
    newest = (
        select(func.max(heads.c.seq))
        .where(heads.c.conversation_id == conversation_id)
        .scalar_subquery()
        .label("latest")
    )
    page = (
        select(*COLUMNS, newest)
        .where(messages.c.conversation_id == conversation_id, messages.c.seq > bindparam(f"cursor_{k}"))
        .order_by(messages.c.seq)
        .limit(bindparam("limit", type_=Integer))
        .subquery()
    )
    return select(page)
