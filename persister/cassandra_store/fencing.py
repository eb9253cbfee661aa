"""Fenced commits: a shard owner's epoch checked in the write that commits, once per batch.

``shard_heads`` has one partition per shard: a static ``epoch`` (the newest owner's) and a
row per conversation with its committed ``last_seq``. Lightweight transactions (Paxos) are
linearizable within a partition, so:

- ``claim`` (once per epoch, by a new owner, in its first commit or in ``MessageStore.fence``):
  ``epoch`` is raised to the owner's if it is lower (``IF epoch < ?``; ``IF NOT EXISTS`` the
  first time a shard is seen). From then on every commit of an older epoch fails. ``take``
  (``MessageStore.fence``) is a claim that, when this store already held the epoch, checks
  with one serial read that no newer owner has taken the shard since.
- ``commit_point`` (once per batch): one conditional batch on the shard's partition, ``IF
  epoch = ?`` plus the batch's new heads. It applies entirely or not at all, so the heads of
  a shard only ever move under the epoch that owns it; a refused commit raises ``FencedOut``.
- A new owner reads heads from ``shard_heads`` at serial consistency, so it resumes after
  the last commit any owner made, even one whose other writes have not all landed yet.

The message rows are written before the commit point, so a stale owner's rows can land late,
over the new owner's rows of the same seqs. Write timestamps settle that: fenced writes are
stamped ``FENCED_BASE + epoch << COMMIT_BITS + commit number``, so a newer epoch's writes win
whatever the order they arrive in, and within one epoch a rewrite of a rolled-back seq wins
over the orphan. ``FENCED_BASE`` (2^60 µs) lies far above any wall-clock timestamp, so a
keyspace written unfenced (one node) can move to fenced writers, never back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cassandra.query import BatchStatement, BatchType  # type: ignore[import-untyped]

from hubbub.stores import Fence, FencedOut
from persister.cassandra_store.driver import Session, fetch_all, in_lists, run_all
from persister.cassandra_store.statements import Statements

__all__ = ["COMMIT_BITS", "FENCED_BASE", "MAX_EPOCH", "Claim", "ShardFences"]

logger = logging.getLogger(__name__)

FENCED_BASE = 1 << 60
COMMIT_BITS = 28  # 268 million commits a shard per epoch; then the owner must take a new epoch
MAX_EPOCH = (1 << (63 - COMMIT_BITS)) - (FENCED_BASE >> COMMIT_BITS) - 1


@dataclass
class Claim:
    """This store's hold on a shard: its epoch and how many commits it stamped under it."""

    epoch: int
    commits: int = 0

    def stamp(self, shard: int) -> int:
        """The write timestamp of the next commit (see the module docstring)."""
        self.commits += 1
        if self.commits >= 1 << COMMIT_BITS:
            raise FencedOut(f"shard {shard}: epoch {self.epoch} used up its commits; take a new epoch")
        return FENCED_BASE + (self.epoch << COMMIT_BITS) + self.commits


class ShardFences:
    """The claims of one store, and the lightweight transactions that take and check them."""

    def __init__(self, session: Session, *, profile: object, serial_profile: object, serial: int) -> None:
        self._session = session
        self._profile = profile
        self._serial_profile = serial_profile
        self._serial = serial
        self._claims: dict[int, Claim] = {}

    async def claim(self, statements: Statements, fence: Fence) -> tuple[Claim, bool]:
        """This store's claim of ``fence.shard`` at ``fence.epoch``, and whether it is new."""
        held = self._claims.get(fence.shard)
        if held is not None and held.epoch == fence.epoch:
            return held, False
        if not 1 <= fence.epoch <= MAX_EPOCH:
            raise ValueError(f"epoch must be within 1..{MAX_EPOCH}, got {fence.epoch}")
        if held is not None and held.epoch > fence.epoch:
            raise FencedOut(f"shard {fence.shard}: epoch {fence.epoch} is older than {held.epoch}")
        raised = statements.raise_epoch.bind((fence.epoch, fence.shard, fence.epoch))
        if not await self._applied(raised):
            first = statements.first_epoch.bind((fence.shard, fence.epoch))
            if not await self._applied(first):
                current = await self.epoch(statements, fence.shard)
                if current != fence.epoch:  # a newer owner, or our own claim that timed out: both fine
                    self._claims.pop(fence.shard, None)
                    raise FencedOut(
                        f"shard {fence.shard}: epoch {fence.epoch} is stale, the shard is at {current}"
                    )
        logger.info("claimed shard %d at epoch %d", fence.shard, fence.epoch)
        self._claims[fence.shard] = Claim(fence.epoch)
        return self._claims[fence.shard], True

    async def take(self, statements: Statements, fence: Fence) -> bool:
        """Claim ``fence`` and make sure it still owns the shard; whether the claim is new here."""
        _, new = await self.claim(statements, fence)
        if not new:
            current = await self.epoch(statements, fence.shard)
            if current != fence.epoch:
                self._claims.pop(fence.shard, None)
                raise FencedOut(f"shard {fence.shard}: epoch {fence.epoch} was taken over by {current}")
        return new

    async def epoch(self, statements: Statements, shard: int) -> int | None:
        """The shard's newest epoch, read at serial consistency."""
        found = await fetch_all(self._session, statements.select_epoch.bind((shard,)), self._serial_profile)
        return int(found[0][0]) if found and found[0][0] is not None else None

    async def heads(self, statements: Statements, shard: int, conversation_ids: list[int]) -> dict[int, int]:
        """The conversations' heads as committed through the shard, read at serial consistency."""
        found = await run_all(
            self._session,
            [statements.select_shard_heads.bind((shard, ids)) for ids in in_lists(conversation_ids)],
            self._serial_profile,
        )  # one partition (the shard's), so a serial read may take many of its rows at once
        return {int(cid): int(seq) for rows_ in found for cid, seq in rows_ if seq is not None}

    async def commit_point(self, statements: Statements, fence: Fence, heads: dict[int, int]) -> None:
        """Move the batch's heads if ``fence`` still owns the shard: the one LWT of a batch."""
        batch = BatchStatement(batch_type=BatchType.LOGGED, serial_consistency_level=self._serial)
        batch.add(statements.check_epoch.bind((fence.epoch, fence.shard, fence.epoch)))
        for conversation_id, seq in heads.items():
            batch.add(statements.set_shard_head.bind((seq, fence.shard, conversation_id)))
        batch.is_idempotent = False
        if not await self._applied(batch):
            self._claims.pop(fence.shard, None)
            raise FencedOut(f"shard {fence.shard}: a newer owner fenced out epoch {fence.epoch}")

    async def _applied(self, statement: object) -> bool:
        found = await fetch_all(self._session, statement, self._profile)
        return bool(found and found[0][0])
