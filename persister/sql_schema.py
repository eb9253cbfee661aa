"""The message store's tables as SQLAlchemy sees them, for the SQL store's reads and its commits.

``messages`` rows are keyed by (conversation_id, seq), so a page is one index range scan; the
unique (conversation_id, sender_id, cmid) constraint is what recognises a resend.
``shard_fences`` holds each conversation shard's newest owner epoch, for a cluster's fenced
commits on PostgreSQL (``persister.sql_fencing``).

The migrations (``persister/migrations``) are the schema: they alone create the tables.
This is their description for queries, and ``tests/persister/test_sql_schema.py`` fails
if the two ever differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, UniqueConstraint

from hubbub.envelope import CommittedMessage

__all__ = ["COLUMNS", "messages", "row_message", "shard_fences"]

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
    UniqueConstraint("conversation_id", "sender_id", "cmid", name="uq_messages_cmid"),
)
shard_fences = Table(
    "shard_fences",
    _metadata,
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
)
# In the order of CommittedMessage's fields, for row_message.
COLUMNS = (
    messages.c.conversation_id,
    messages.c.message_id,
    messages.c.seq,
    messages.c.sender_id,
    messages.c.cmid,
    messages.c.text,
    messages.c.created_at,
)


def row_message(row: Sequence[Any]) -> CommittedMessage:
    """A row selected with ``COLUMNS`` as a message."""
    conversation_id, message_id, seq, sender_id, cmid, text, created_at = row
    return CommittedMessage(conversation_id, message_id, seq, sender_id, cmid, text, created_at)
