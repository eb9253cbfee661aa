"""The history schema in Cassandra, as versioned migrations like the SQL ones.

``migrate`` creates the keyspace if it is missing (with the operator's replication), then a
``schema_version`` table, then applies each migration not yet recorded there, in order,
recording it afterwards. Every statement is ``IF NOT EXISTS``, so a migration cut short
runs again safely, and applying twice is a no-op. Run one migrator at a time (start-up of
one process, or a deploy step), as with the SQL migrations: concurrent schema changes on
one cluster can disagree.

Tables, partition key first::

    messages_by_conversation ((conversation_id, bucket), seq DESC)  message_id, sender_id, cmid, text, ...
    messages_by_key ((key))  key = (conversation_id, sender_id, cmid)  seq, message_id   (resend dedupe)
    conversation_heads (conversation_id)                            last_seq          (commit point)
    shard_heads ((shard), conversation_id)  static epoch            last_seq          (fenced commits)

``bucket = seq // BUCKET_SIZE``. 1,000 seqs a bucket: typical chat text (a few hundred bytes
a message) makes partitions of well under 1 MB, and even a conversation whose messages
average 100 KB stays near the ~100 MB Cassandra advises as a ceiling, however long the
conversation lives; a page of 50 reads one partition, two when it straddles a boundary (one
page in twenty). The size is fixed for the life of a keyspace: changing it moves every row.

The dedupe pointers are keyed by one tuple column (migration 3) rather than by three partition
key columns (migration 1's ``messages_by_cmid``, no longer read or written): a key of one
column can be looked up with ``key IN ?``, so a batch's resend check is one request for up to
100 keys, whatever conversations and senders they span (three key columns would each take an
``IN`` and read their cartesian product). ``messages_by_cmid`` was written only by the store
of the day migration 3 was added; its rows are not copied over.

Read markers and device cursors live with the accounts in SQL (DESIGN.md), not here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from persister.cassandra_store.driver import Session, check_keyspace, fetch_all, wait

__all__ = ["BUCKET_SIZE", "DEFAULT_REPLICATION", "MIGRATIONS", "Migration", "migrate"]

logger = logging.getLogger(__name__)

BUCKET_SIZE = 1_000
DEFAULT_REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
# A CQL map literal of plain words and numbers: interpolated into CREATE KEYSPACE.
_REPLICATION = re.compile(r"\{\s*'class'\s*:\s*'[\w.]+'(\s*,\s*'[\w.-]+'\s*:\s*'?\w+'?)*\s*\}")


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: CQL templates (``{ks}`` is the keyspace), applied in order."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS = (
    Migration(
        1,
        "history by conversation and seq bucket, resend dedupe, conversation heads",
        (
            """CREATE TABLE IF NOT EXISTS {ks}.messages_by_conversation (
                conversation_id bigint, bucket bigint, seq bigint, message_id bigint, sender_id bigint,
                cmid text, text text, created_at bigint,
                PRIMARY KEY ((conversation_id, bucket), seq)
            ) WITH CLUSTERING ORDER BY (seq DESC)""",
            """CREATE TABLE IF NOT EXISTS {ks}.messages_by_cmid (
                conversation_id bigint, sender_id bigint, cmid text, seq bigint, message_id bigint,
                PRIMARY KEY ((conversation_id, sender_id, cmid))
            )""",
            """CREATE TABLE IF NOT EXISTS {ks}.conversation_heads (
                conversation_id bigint PRIMARY KEY, last_seq bigint
            )""",
        ),
    ),
    Migration(
        2,
        "shard heads and owner epochs for fenced commits",
        (
            """CREATE TABLE IF NOT EXISTS {ks}.shard_heads (
                shard int, conversation_id bigint, last_seq bigint, epoch bigint STATIC,
                PRIMARY KEY ((shard), conversation_id)
            )""",
        ),
    ),
    Migration(
        3,
        "resend dedupe keyed by one tuple column, so a batch checks its keys in one IN read",
        (
            """CREATE TABLE IF NOT EXISTS {ks}.messages_by_key (
                key frozen<tuple<bigint, bigint, text>> PRIMARY KEY, seq bigint, message_id bigint
            )""",
        ),
    ),
)
_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS {ks}.schema_version (
    version int PRIMARY KEY, description text, applied_at timestamp
)"""
_CREATE_KEYSPACE = "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"
_APPLIED = "SELECT version FROM {ks}.schema_version"
_RECORD = (
    "INSERT INTO {ks}.schema_version (version, description, applied_at) VALUES (%s, %s, toTimestamp(now()))"
)


async def migrate(
    session: Session, keyspace: str, *, replication: str | None = DEFAULT_REPLICATION
) -> list[int]:
    """Bring ``keyspace`` to the latest schema; the versions applied now (none when up to date).

    ``replication`` (a CQL map) creates the keyspace when it is missing; ``None`` leaves
    keyspaces to operators and fails if it does not exist.
    """
    keyspace = check_keyspace(keyspace)
    if replication is not None:
        if not _REPLICATION.fullmatch(replication.strip()):
            raise ValueError(f"replication must be a CQL map like {DEFAULT_REPLICATION}, got {replication!r}")
        # The driver answers a schema change only once the cluster agrees on it.
        await wait(
            session.execute_async(
                f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}"
            )
        )
    await wait(session.execute_async(_VERSION_TABLE.format(ks=keyspace)))
    # Index access: the session's default profile may make named tuples or tuples of rows.
    versions = await fetch_all(session, _APPLIED.format(ks=keyspace))
    applied = {int(row[0]) for row in versions}
    done: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            await wait(session.execute_async(statement.format(ks=keyspace)))
        await wait(
            session.execute_async(_RECORD.format(ks=keyspace), (migration.version, migration.description))
        )
        logger.info("Cassandra keyspace %s: applied migration %d", keyspace, migration.version)
        done.append(migration.version)
    return done
