"""Fenced commits on PostgreSQL: the shard owner's epoch checked in the transaction that assigns seqs.

``shard_fences`` holds each shard's newest epoch. A fenced commit's transaction starts with one
conditional upsert of its shard's row, before it reads or writes anything else (``_TAKE``)::

    INSERT INTO shard_fences (shard, epoch) SELECT :shard, :epoch
    WHERE set_config('idle_in_transaction_session_timeout', :stalled_ms, true) IS NOT NULL
    ON CONFLICT (shard) DO UPDATE SET epoch = excluded.epoch
    WHERE shard_fences.epoch <= excluded.epoch RETURNING epoch

- The epoch is the shard's newest or a newer one: the row is written (a new owner takes the
  shard over with its first commit, or with ``MessageStore.fence``; the same epoch may commit
  any number of batches). An older epoch: no row comes back, ``FencedOut`` is raised and the
  transaction, which has written nothing else yet, rolls back.
- The row stays locked until the transaction ends, so a shard's commits are serialized: a new
  owner's takeover waits for the old owner's commit in flight, and then (READ COMMITTED: each
  statement sees what committed before it) reads the conversations' last seqs after it; the
  old owner's next commit finds the newer epoch and is refused.
- An owner paused in the middle of a commit (SIGSTOP, a stalled machine) would hold that lock,
  and the shard with it, until it runs again. So the same statement limits how long the rest
  of its transaction may sit idle (``set_config(..., true)``: this transaction only, in the
  same round trip): past ``stalled_after_s`` the server ends the session, releasing the lock,
  and the paused owner's commit fails when it resumes. Nothing else's transactions change.

An unfenced commit (one node) runs none of this: it costs nothing more than before.

SQLite takes no fence: a SQLite file serves a single node, so a cluster's persisters, on
other machines, could not share it; ``single_node`` is the refusal every path raises.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, text

from hubbub.errors import CommitFailed
from hubbub.stores import Fence, FencedOut
from persister.sql_schema import shard_fences

__all__ = ["STALLED_AFTER_S", "ShardClaims", "single_node"]

logger = logging.getLogger(__name__)

STALLED_AFTER_S = 5.0
"""A fenced transaction idle this long belongs to a paused owner (a commit's statements follow
each other within milliseconds). The clock starts when the owner stops, so a new owner, which
first waited for the lease to expire, waits at most what is left of it (nothing, past a 5 s TTL)."""

_TAKE = text(
    f"INSERT INTO {shard_fences.name} (shard, epoch) SELECT CAST(:shard AS INTEGER), CAST(:epoch AS BIGINT)"
    " WHERE set_config('idle_in_transaction_session_timeout', :stalled_ms, true) IS NOT NULL"
    " ON CONFLICT (shard) DO UPDATE SET epoch = excluded.epoch"
    f" WHERE {shard_fences.name}.epoch <= excluded.epoch RETURNING epoch"
)


def single_node(fence: Fence) -> CommitFailed:
    """The refusal of a fence by SQLite: not ``FencedOut`` (no newer owner exists), a misconfiguration."""
    return CommitFailed(
        f"shard {fence.shard}: a SQLite message store serves a single node and takes no fence"
        " (a cluster's persisters cannot share its file); store a cluster's history in"
        " PostgreSQL or Cassandra"
    )


class ShardClaims:
    """The epochs one writer holds, and the upsert that takes and checks them (PostgreSQL only)."""

    def __init__(self, *, stalled_after_s: float = STALLED_AFTER_S) -> None:
        self._epochs: dict[int, int] = {}
        self._stalled_ms = str(max(1, round(stalled_after_s * 1000)))

    def take(self, connection: Connection, fence: Fence) -> bool:
        """Check ``fence`` inside the caller's transaction, first thing; whether its epoch is new here.

        New: another owner may have committed to the shard since this writer last held it, so
        the caller must drop what it cached of the shard's conversations. Raises ``FencedOut``.
        """
        values = {"shard": fence.shard, "epoch": fence.epoch, "stalled_ms": self._stalled_ms}
        if connection.execute(_TAKE, values).first() is None:
            self._epochs.pop(fence.shard, None)
            raise FencedOut(f"shard {fence.shard}: a newer owner fenced out epoch {fence.epoch}")
        if self._epochs.get(fence.shard) == fence.epoch:
            return False
        logger.info("claimed shard %d at epoch %d", fence.shard, fence.epoch)
        self._epochs[fence.shard] = fence.epoch
        return True
