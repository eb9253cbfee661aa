"""The delivery log: at most one push per (message, token), across restarts too.

A committed message can reach the notifier twice — a redelivered hand-off after a crash, a
replayed stream after a restart — and a push is the one thing a client cannot de-duplicate.
So before the first attempt the dispatcher *claims* ``(message_id, token_id)``; only the first
claim wins. Claiming before sending makes a push at-most-once: a crash between claim and send
loses that push, which is the better failure (the message is in history; a duplicate would ring
twice).

Two implementations: in memory (one process, bounded), and SQL on SQLAlchemy's async engine
(its own ``push_deliveries`` table, made by the ``deliveries`` migrations in ``notifier/migrations``;
``prune`` keeps it bounded).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "DeliveryLog",
    "MemoryDeliveryLog",
    "SqlDeliveryLog",
    "push_deliveries",
]


class DeliveryLog(Protocol):
    """Remembers which (message, token) pairs were pushed."""

    async def claim(self, message_id: int, token_id: str) -> bool:
        """True exactly once per pair: the caller may push; False means pushed already."""
        ...


class MemoryDeliveryLog:
    """A delivery log in memory, forgetting the oldest claims beyond ``capacity``."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._claimed: OrderedDict[tuple[int, str], None] = OrderedDict()

    async def claim(self, message_id: int, token_id: str) -> bool:
        """Claim the pair unless it was claimed (and not yet forgotten)."""
        key = (message_id, token_id)
        if key in self._claimed:
            return False
        self._claimed[key] = None
        if len(self._claimed) > self._capacity:
            self._claimed.popitem(last=False)
        return True


# The migrations create the table; this describes it for queries (a test checks they agree).
push_deliveries = Table(
    "push_deliveries",
    MetaData(),
    Column("message_id", BigInteger, primary_key=True, autoincrement=False),
    Column("token_id", String(255), primary_key=True),
    Column("claimed_at_ms", BigInteger, nullable=False),
    Index("ix_push_deliveries_claimed_at_ms", "claimed_at_ms"),
)


class SqlDeliveryLog:
    """A delivery log in a SQL table; the primary key makes the claim atomic on any backend."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    async def claim(self, message_id: int, token_id: str) -> bool:
        """Insert the pair; a primary-key conflict means it was claimed before."""
        row = {"message_id": message_id, "token_id": token_id, "claimed_at_ms": int(self._clock() * 1000)}
        try:
            async with self._engine.begin() as connection:
                await connection.execute(insert(push_deliveries).values(row))
        except IntegrityError:
            return False
        return True

    async def prune(self, older_than_s: float) -> int:
        """Forget claims older than ``older_than_s`` seconds (no message is replayed that late)."""
        cutoff = int((self._clock() - older_than_s) * 1000)
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(push_deliveries).where(push_deliveries.c.claimed_at_ms < cutoff)
            )
        return int(result.rowcount)
