"""The delivery log: at most one push per (message, token), across restarts and notifiers too.

A committed message can reach a notifier twice — a redelivered hand-off after a notifier died
mid-batch, a shard that moved to another notifier, a replayed stream — and a push is the one
thing a client cannot de-duplicate. So every push goes through two phases here:

``claim``
    Before the first attempt. The first claim of ``(message_id, token_id)`` wins and records
    the pair *in flight* with the time. A later claim finds it either *settled* (pushed, or
    given up for good: skip it), or in flight: held by a live notifier (busy: ask again later,
    the answer says when), or held by one that died (its claim is older than ``stale_after_s``:
    taken over, the caller pushes). So a notifier killed between claim and send loses nothing:
    the next owner of the shard retakes the claim once it is stale.
``refresh``
    Before every retry attempt, so a claim a live notifier keeps retrying never looks stale.
``settle``
    Right after the provider's final answer (accepted, token rejected, permanently failed,
    retries exhausted): the pair is done, and a redelivery skips it.

The window left: a notifier killed after the provider accepted a push and before ``settle``
was recorded. The next owner retakes the stale claim and pushes again. ``settle`` is the first
thing done with a provider's answer to keep that window to one database round trip, and every
push of a conversation carries the conversation as APNs ``apns-collapse-id``, FCM
``collapse_key``/tag and Web Push ``Topic``, so such a duplicate replaces the notification on
the device instead of ringing twice.

Claims are timed on the wall clock (``time.time``), shared by notifiers on different machines:
``stale_after_s`` must exceed the longest a live notifier holds a claim without refreshing it
(one attempt's ``send_timeout`` plus the longest retry backoff) plus any clock skew between them.

Two implementations: in memory (one process, bounded), and SQL on SQLAlchemy's async engine
(its own ``push_deliveries`` table, made by the ``deliveries`` migrations in
``notifier/migrations``; ``prune`` keeps it bounded).
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "DEFAULT_STALE_AFTER_S",
    "Claim",
    "ClaimState",
    "DeliveryLog",
    "MemoryDeliveryLog",
    "SqlDeliveryLog",
    "push_deliveries",
]

DEFAULT_STALE_AFTER_S = 120.0
"""Above the dispatcher's default send timeout (15 s) plus its longest backoff (60 s), with room."""


class ClaimState(enum.Enum):
    """What a claim found."""

    WON = "won"  # push it (a first claim, or a dead notifier's claim taken over)
    SETTLED = "settled"  # pushed or given up before: skip it
    BUSY = "busy"  # another notifier is pushing it now: ask again after ``retry_in_s``


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim; ``retry_in_s`` is when a busy claim may have gone stale."""

    state: ClaimState
    retry_in_s: float = 0.0


WON = Claim(ClaimState.WON)
SETTLED = Claim(ClaimState.SETTLED)


class DeliveryLog(Protocol):
    """Remembers which (message, token) pairs are being pushed, and which are done."""

    async def claim(self, message_id: int, token_id: str) -> Claim:
        """Take the pair for a push, unless it is settled or held by a live notifier."""
        ...

    async def refresh(self, message_id: int, token_id: str) -> None:
        """Keep this notifier's claim fresh (before a retry attempt)."""
        ...

    async def settle(self, message_id: int, token_id: str) -> None:
        """The pair is done: pushed, or given up for good."""
        ...


def _busy(claimed_at: float, now: float, stale_after_s: float) -> Claim:
    return Claim(ClaimState.BUSY, max(0.0, claimed_at + stale_after_s - now))


class MemoryDeliveryLog:
    """A delivery log in memory, forgetting the oldest pairs beyond ``capacity``."""

    def __init__(
        self,
        capacity: int = 100_000,
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._capacity = capacity
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._claimed_at: OrderedDict[tuple[int, str], float | None] = OrderedDict()  # None: settled

    async def claim(self, message_id: int, token_id: str) -> Claim:
        """Claim the pair unless it is settled or freshly claimed (and not yet forgotten)."""
        key = (message_id, token_id)
        now = self._clock()
        if key in self._claimed_at:
            claimed_at = self._claimed_at[key]
            if claimed_at is None:
                return SETTLED
            if now - claimed_at < self._stale_after_s:
                return _busy(claimed_at, now, self._stale_after_s)
        self._claimed_at[key] = now
        if len(self._claimed_at) > self._capacity:
            self._claimed_at.popitem(last=False)
        return WON

    async def refresh(self, message_id: int, token_id: str) -> None:
        """Renew the claim's time, unless it is settled."""
        key = (message_id, token_id)
        if self._claimed_at.get(key) is not None:
            self._claimed_at[key] = self._clock()

    async def settle(self, message_id: int, token_id: str) -> None:
        """Mark the pair done."""
        self._claimed_at[message_id, token_id] = None


# The migrations create the table; this describes it for queries (a test checks they agree).
push_deliveries = Table(
    "push_deliveries",
    MetaData(),
    Column("message_id", BigInteger, primary_key=True, autoincrement=False),
    Column("token_id", String(255), primary_key=True),
    Column("claimed_at_ms", BigInteger, nullable=False),
    Column("settled_at_ms", BigInteger, nullable=True),
    Index("ix_push_deliveries_claimed_at_ms", "claimed_at_ms"),
)
_table = push_deliveries.c


class SqlDeliveryLog:
    """A delivery log in a SQL table; the primary key and conditional updates make claims atomic."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], float] = time.time,
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._stale_after_s = stale_after_s

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def claim(self, message_id: int, token_id: str) -> Claim:
        """Insert the pair in flight; on a conflict, skip, wait, or take a stale claim over."""
        now = self._now_ms()
        row = {"message_id": message_id, "token_id": token_id, "claimed_at_ms": now}
        try:
            async with self._engine.begin() as connection:
                await connection.execute(insert(push_deliveries).values(row))
        except IntegrityError:
            pass
        else:
            return WON
        key = (_table.message_id == message_id) & (_table.token_id == token_id)
        async with self._engine.begin() as connection:
            found = (
                await connection.execute(select(_table.claimed_at_ms, _table.settled_at_ms).where(key))
            ).one_or_none()
            if found is None:  # pruned meanwhile: nobody holds it
                return await self.claim(message_id, token_id)
            claimed_at, settled_at = found
            if settled_at is not None:
                return SETTLED
            stale_ms = self._stale_after_s * 1000
            if now - claimed_at < stale_ms:
                return _busy(claimed_at / 1000, now / 1000, self._stale_after_s)
            # The holder died: take the claim over, unless another notifier just did.
            taken = await connection.execute(
                update(push_deliveries)
                .where(key, _table.claimed_at_ms == claimed_at, _table.settled_at_ms.is_(None))
                .values(claimed_at_ms=now)
            )
        if taken.rowcount == 1:
            return WON
        return Claim(ClaimState.BUSY, self._stale_after_s)

    async def refresh(self, message_id: int, token_id: str) -> None:
        """Renew the claim's time, unless it is settled."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(push_deliveries)
                .where(
                    _table.message_id == message_id,
                    _table.token_id == token_id,
                    _table.settled_at_ms.is_(None),
                )
                .values(claimed_at_ms=self._now_ms())
            )

    async def settle(self, message_id: int, token_id: str) -> None:
        """Mark the pair done."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(push_deliveries)
                .where(_table.message_id == message_id, _table.token_id == token_id)
                .values(settled_at_ms=self._now_ms())
            )

    async def prune(self, older_than_s: float) -> int:
        """Forget claims older than ``older_than_s`` seconds (no message is replayed that late)."""
        cutoff = int((self._clock() - older_than_s) * 1000)
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(push_deliveries).where(push_deliveries.c.claimed_at_ms < cutoff)
            )
        return int(result.rowcount)
