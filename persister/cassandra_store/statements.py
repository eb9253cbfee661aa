"""The store's CQL, prepared once per store (``Session.prepare`` blocks: it runs in a thread).

Reads and plain writes of fixed values are marked idempotent, so the driver may retry or
speculate them; the lightweight transactions of fenced commits are not (a retried Paxos
round can report "not applied" for its own first attempt), and the store resolves their
doubtful outcomes itself by reading at serial consistency. Writes carry their own
timestamps (``USING TIMESTAMP``): see ``persister.cassandra_store.store`` for why.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields

from persister.cassandra_store.driver import Prepared, Session

__all__ = ["Statements", "prepare"]

# Templates, not f-strings: the keyspace is validated once, then substituted by ``prepare``.
_QUERIES = {
    "insert_message": "INSERT INTO {ks}.messages_by_conversation (conversation_id, bucket, seq, message_id,"
    " sender_id, cmid, text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "insert_key": "INSERT INTO {ks}.messages_by_key (key, seq, message_id) VALUES (?, ?, ?)"
    " USING TIMESTAMP ?",
    # Stamped with the seq itself: of two head writes the higher seq wins, in whatever order they land.
    "set_head": "UPDATE {ks}.conversation_heads USING TIMESTAMP ? SET last_seq = ? WHERE conversation_id = ?",
    # Multi-key reads (``IN ?`` binds a list): one request for many single-column partition keys.
    "select_heads": "SELECT conversation_id, last_seq FROM {ks}.conversation_heads"
    " WHERE conversation_id IN ?",
    "select_keys": "SELECT key, seq, message_id FROM {ks}.messages_by_key WHERE key IN ?",
    "select_messages": "SELECT conversation_id, message_id, seq, sender_id, cmid, text, created_at"
    " FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?",
    "select_messages_at": "SELECT conversation_id, message_id, seq, sender_id, cmid, text, created_at"
    " FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND bucket = ? AND seq IN ?",
    "select_senders": "SELECT sender_id FROM {ks}.messages_by_conversation"
    " WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?",
    # Fenced commits (read at serial consistency, so an accepted Paxos round is always seen).
    "select_shard_heads": "SELECT conversation_id, last_seq FROM {ks}.shard_heads"
    " WHERE shard = ? AND conversation_id IN ?",
    "select_epoch": "SELECT epoch FROM {ks}.shard_heads WHERE shard = ? LIMIT 1",
    "set_shard_head": "UPDATE {ks}.shard_heads SET last_seq = ? WHERE shard = ? AND conversation_id = ?",
    # Lightweight transactions.
    "raise_epoch": "UPDATE {ks}.shard_heads SET epoch = ? WHERE shard = ? IF epoch < ?",
    "first_epoch": "INSERT INTO {ks}.shard_heads (shard, epoch) VALUES (?, ?) IF NOT EXISTS",
    "check_epoch": "UPDATE {ks}.shard_heads SET epoch = ? WHERE shard = ? IF epoch = ?",
}
_NOT_IDEMPOTENT = frozenset({"raise_epoch", "first_epoch", "check_epoch"})


@dataclass(frozen=True, slots=True)
class Statements:
    """Each query of ``_QUERIES``, prepared."""

    insert_message: Prepared
    insert_key: Prepared
    set_head: Prepared
    select_heads: Prepared
    select_keys: Prepared
    select_messages: Prepared
    select_messages_at: Prepared
    select_senders: Prepared
    select_shard_heads: Prepared
    select_epoch: Prepared
    set_shard_head: Prepared
    raise_epoch: Prepared
    first_epoch: Prepared
    check_epoch: Prepared


async def prepare(session: Session, keyspace: str, *, serial_consistency: int) -> Statements:
    """Every statement prepared in ``keyspace`` (already validated), concurrently."""
    names = [field.name for field in fields(Statements)]
    prepared = await asyncio.gather(
        *(asyncio.to_thread(session.prepare, _QUERIES[name].format(ks=keyspace)) for name in names)
    )
    for name, statement in zip(names, prepared, strict=True):
        statement.is_idempotent = name not in _NOT_IDEMPOTENT
        if name in _NOT_IDEMPOTENT:
            statement.serial_consistency_level = serial_consistency
    return Statements(**dict(zip(names, prepared, strict=True)))
