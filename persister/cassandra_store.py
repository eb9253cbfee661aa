"""The Cassandra message store: history partitioned by conversation and a bucket of seq.

Tables (``create_schema``), partition key first::

    messages_by_conversation ((conversation_id, bucket), seq DESC)  message_id, sender_id, cmid, text, ...
    messages_by_cmid ((conversation_id, sender_id, cmid))           seq, message_id   (dedupe pointer)
    conversation_heads (conversation_id)                            last_seq          (commit point)

``bucket = seq // bucket_size`` caps a partition at ``bucket_size`` rows however long a
conversation lives (so the bucket size is fixed for the life of a keyspace).

No lightweight transactions (Paxos would cost four round trips a write): the persister
owning a conversation is its single writer (DESIGN.md), so it assigns seqs from a cached
head, loaded from ``conversation_heads`` on a miss. A commit (1) binds every statement, so
a bad value fails before anything is written; (2) writes the message rows and dedupe
pointers, concurrently, until all are acknowledged; (3) writes the new heads: one row, or a
logged batch (all-or-nothing) when the commit spans conversations.

The head is the commit point: readers read it first and never look past it, so seqs
``1..head`` are dense and rows past it invisible. Rows cannot lag the head, which is written
only after them, as long as reads see writes (R + W > RF; LOCAL_QUORUM both by default).
A failure before (3) rolls back: the cached heads are reloaded and the orphan rows past
them are overwritten when their seqs are given out again (client-side timestamps make the
later write win; a new owner starts only after the old one's lease expired, which outlasts
clock skew). A failure in (3) rolls forward: every row was acknowledged, so the cached
heads stand and are written first thing in the next commit (or ``close``), before any
resend is answered as a duplicate. A dedupe pointer counts only if its seq is at most the
head *and* the row there carries its message_id; a pointer left by a rolled-back commit,
whose seq may since hold another message, is ignored and overwritten: each cmid is stored
once. Left open: after a crash *during* (3), the lost head write may reach a replica and be
read until the next owner's head write, stamped later, supersedes it.

Because seqs are dense a page is an exact seq range (``plan_page``), read bucket by bucket
(``bucket_ranges``) with key-range queries: no LIMIT probing, no ALLOW FILTERING.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

# cassandra-driver ships neither type hints nor a py.typed marker; the few calls made on
# its objects are described by the Protocols below.
from cassandra import ConsistencyLevel  # type: ignore[import-untyped]
from cassandra.cluster import (  # type: ignore[import-untyped]
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
)
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy  # type: ignore[import-untyped]
from cassandra.query import BatchStatement, BatchType, tuple_factory  # type: ignore[import-untyped]

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.stores import MessagePage

__all__ = ["CassandraMessageStore", "bucket_ranges", "connect", "contact_point", "create_schema", "plan_page"]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9042
_KEYSPACE = re.compile(r"[a-z][a-z0-9_]{0,47}")
# Requests in flight per call: enough to hide round trips, few enough not to swamp the pools.
_CONCURRENCY = 64
# Conversations counted at once for one unread_counts call (each count may read several pages).
_CONCURRENT_COUNTS = 16
_SCHEMA = (
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
)
# Templates, not f-strings: the keyspace is validated once, then substituted by ``_prepared``.
_QUERIES = {
    "insert_message": "INSERT INTO {ks}.messages_by_conversation (conversation_id, bucket, seq, message_id,"
    " sender_id, cmid, text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "insert_cmid": "INSERT INTO {ks}.messages_by_cmid (conversation_id, sender_id, cmid, seq, message_id)"
    " VALUES (?, ?, ?, ?, ?)",
    "set_head": "UPDATE {ks}.conversation_heads SET last_seq = ? WHERE conversation_id = ?",
    "select_head": "SELECT last_seq FROM {ks}.conversation_heads WHERE conversation_id = ?",
    "select_cmid": "SELECT seq, message_id FROM {ks}.messages_by_cmid"
    " WHERE conversation_id = ? AND sender_id = ? AND cmid = ?",
    "select_messages": "SELECT conversation_id, message_id, seq, sender_id, cmid, text, created_at"
    " FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?",
    "select_senders": "SELECT sender_id FROM {ks}.messages_by_conversation"
    " WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?",
}

Row = tuple[Any, ...]


class _ResponseFuture(Protocol):  # cassandra.cluster.ResponseFuture
    @property
    def has_more_pages(self) -> bool: ...
    # With this store's profile a page is a list of tuples; a write's result is None.
    def add_callbacks(
        self, callback: Callable[[list[Row] | None], None], errback: Callable[[BaseException], None]
    ) -> object: ...
    def clear_callbacks(self) -> None: ...
    def start_fetching_next_page(self) -> None: ...


class _Prepared(Protocol):  # cassandra.query.PreparedStatement
    is_idempotent: bool

    def bind(self, values: Sequence[object]) -> object: ...


class _Batch(Protocol):  # cassandra.query.BatchStatement
    is_idempotent: bool

    def add(self, statement: object) -> object: ...


class _Cluster(Protocol):  # cassandra.cluster.Cluster
    def shutdown(self) -> None: ...


class _Session(Protocol):  # cassandra.cluster.Session
    @property
    def cluster(self) -> _Cluster: ...
    def prepare(self, query: str) -> _Prepared: ...
    def execute_async(
        self, query: object, parameters: object = None, *, execution_profile: object = ...
    ) -> _ResponseFuture: ...
    def execution_profile_clone_update(self, ep: object, **kwargs: object) -> object: ...


class PagePlan(NamedTuple):
    """Seqs ``first..last`` (inclusive; empty when ``first > last``) and whether more lie beyond."""

    first: int
    last: int
    has_more: bool


def plan_page(
    head: int, *, limit: int, before: int | None = None, after: int | None = None, around: int | None = None
) -> PagePlan:
    """The page ``MessageStore.page`` returns when seqs ``1..head`` exist.

    Seqs are dense, so this is arithmetic: exactly what the SQL store's ``LIMIT n + 1``
    probes return, including ``around`` keeping at most ``limit // 2`` older messages.
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if around is not None:
        half = limit // 2
        older_last, newer_first = min(around - 1, head), max(around, 1)
        older = min(half + 1, max(older_last, 0))
        newer = min(limit - min(half, older) + 1, max(head - newer_first + 1, 0))
        kept_older = min(half, older)
        kept_newer = min(newer, limit - kept_older)
        first = older_last - kept_older + 1 if kept_older else newer_first
        return PagePlan(first, first + kept_older + kept_newer - 1, older > half or newer > kept_newer)
    if after is not None:
        first = max(after + 1, 1)
        last = min(first + limit - 1, head)
        return PagePlan(first, last, last < head)
    last = head if before is None else min(before - 1, head)
    first = max(last - limit + 1, 1)
    return PagePlan(first, last, first > 1)


def bucket_ranges(first: int, last: int, bucket_size: int) -> list[tuple[int, int, int]]:
    """``(bucket, first, last)`` for each bucket that seqs ``first..last`` touch, oldest first."""
    ranges: list[tuple[int, int, int]] = []
    while first <= last:
        bucket = first // bucket_size
        end = min(last, (bucket + 1) * bucket_size - 1)
        ranges.append((bucket, first, end))
        first = end + 1
    return ranges


def contact_point(host: str) -> tuple[str, int]:
    """``"host[:port]"`` (``"[v6]:port"`` for IPv6) as the driver's ``(host, port)``."""
    name, colon, port = host.strip().rpartition(":")
    if not colon or (name.count(":") and not name.endswith("]")):
        return host.strip().strip("[]"), DEFAULT_PORT
    try:
        return name.strip("[]"), int(port)
    except ValueError as exc:
        raise ValueError(f"bad Cassandra host {host!r}: the port is not a number") from exc


def _keyspace(name: str) -> str:
    # Interpolated into CQL, so only plain lower-case identifiers (never quoted) get through.
    if not _KEYSPACE.fullmatch(name):
        raise ValueError(f"keyspace must match {_KEYSPACE.pattern}, got {name!r}")
    return name


async def _wait(response: _ResponseFuture) -> list[Row] | None:
    """The result of ``response`` without blocking the loop: the driver's IO thread calls back."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[Row] | None] = loop.create_future()

    def settle(result: list[Row] | None, error: BaseException | None) -> None:
        if done.done():  # the awaiting task was cancelled
            return
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)

    def hand_over(result: list[Row] | None, error: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed while the request was in flight: nobody waits
            logger.debug("dropped a Cassandra response for a closed event loop")

    response.add_callbacks(lambda result: hand_over(result, None), lambda error: hand_over(None, error))
    return await done


async def _pages(session: _Session, statement: object, profile: object) -> AsyncIterator[list[Row]]:
    """Each page of a statement's rows, fetching the next only when the previous is consumed."""
    response = session.execute_async(statement, execution_profile=profile)
    while True:
        yield list(await _wait(response) or ())
        if not response.has_more_pages:
            return
        # Callbacks survive a page turn; clear them first so each page settles one future.
        response.clear_callbacks()
        response.start_fetching_next_page()


async def create_schema(session: _Session, keyspace: str) -> None:
    """Create the store's tables in ``keyspace`` (which exists: its replication is an operator's choice)."""
    keyspace = _keyspace(keyspace)
    for statement in _SCHEMA:
        # The driver answers a schema change only once the cluster agrees on it.
        await _wait(session.execute_async(statement.format(ks=keyspace)))


def _message(row: Row) -> CommittedMessage:
    return CommittedMessage(*row)


@dataclass(frozen=True, slots=True)
class _Statements:
    insert_message: _Prepared
    insert_cmid: _Prepared
    set_head: _Prepared
    select_head: _Prepared
    select_cmid: _Prepared
    select_messages: _Prepared
    select_senders: _Prepared


class CassandraMessageStore:
    """``MessageStore`` on Apache Cassandra; see the module docstring for the commit protocol.

    ``session`` must use execution profiles (the driver's default); the store runs its
    requests under its own profile (tuple rows, ``consistency``) and leaves the session's
    defaults alone. It shuts the cluster down on ``close`` only if ``owns_cluster``.
    """

    def __init__(
        self,
        session: _Session,
        keyspace: str,
        *,
        bucket_size: int = 10_000,
        consistency: int = ConsistencyLevel.LOCAL_QUORUM,
        owns_cluster: bool = False,
    ) -> None:
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be positive, got {bucket_size}")
        self._session = session
        self._keyspace = _keyspace(keyspace)
        self._bucket_size = bucket_size
        self._owns_cluster = owns_cluster
        self._profile = session.execution_profile_clone_update(
            EXEC_PROFILE_DEFAULT, row_factory=tuple_factory, consistency_level=consistency
        )
        self._statements: _Statements | None = None
        self._preparing = asyncio.Lock()
        self._last_seq: dict[int, int] = {}
        self._owed_heads: dict[int, int] = {}
        self._commit_lock = asyncio.Lock()

    @property
    def session(self) -> _Session:
        """The driver session (for schema work and diagnostics)."""
        return self._session

    async def _prepared(self) -> _Statements:
        """The prepared statements, prepared once on first use (``Session.prepare`` blocks: a thread)."""
        if self._statements is not None:
            return self._statements
        async with self._preparing:
            if self._statements is None:
                prepared = await asyncio.gather(
                    *(
                        asyncio.to_thread(self._session.prepare, query.format(ks=self._keyspace))
                        for query in _QUERIES.values()
                    )
                )
                for statement in prepared:
                    statement.is_idempotent = True  # reads, and writes of fixed values: safe to retry
                self._statements = _Statements(**dict(zip(_QUERIES, prepared, strict=True)))
            return self._statements

    def _bucket(self, seq: int) -> int:
        return seq // self._bucket_size

    async def _rows(self, statement: object) -> list[Row]:
        return [row async for page in _pages(self._session, statement, self._profile) for row in page]

    async def _run_all(self, statements: Sequence[object]) -> list[list[Row]]:
        """Every statement's rows, ``_CONCURRENCY`` at most in flight; the first failure once all ended."""
        limiter = asyncio.Semaphore(_CONCURRENCY)

        async def one(statement: object) -> list[Row]:
            async with limiter:
                return await self._rows(statement)

        outcomes = await asyncio.gather(*(one(s) for s in statements), return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            logger.warning("%d of %d Cassandra requests failed", len(failures), len(statements))
            raise failures[0]
        return [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]

    async def _read_heads(self, conversation_ids: Collection[int]) -> dict[int, int]:
        statements = await self._prepared()
        ids = list(dict.fromkeys(conversation_ids))
        found = await self._run_all([statements.select_head.bind((cid,)) for cid in ids])
        return {cid: int(rows[0][0]) for cid, rows in zip(ids, found, strict=True) if rows and rows[0][0]}

    async def commit(self, batch: Sequence[AcceptedMessage]) -> list[CommitResult]:
        """Store ``batch``, heads last; see the module docstring and ``MessageStore.commit``."""
        if not batch:
            return []
        async with self._commit_lock:  # one batch at a time, in call order (asyncio.Lock is FIFO)
            return await self._commit(batch)

    async def _commit(self, batch: Sequence[AcceptedMessage]) -> list[CommitResult]:
        conversations = {message.conversation_id for message in batch}
        heads: dict[int, int] = {}
        rows_written = False
        try:
            statements = await self._prepared()
            await self._write_owed_heads(statements)
            missing = conversations - self._last_seq.keys()
            self._last_seq.update(dict.fromkeys(missing, 0) | await self._read_heads(missing))
            stored = await self._already_stored(statements, batch)
            results, new = self._assign(batch, stored)
            writes = [statement for message in new for statement in self._bind_rows(statements, message)]
            heads = {message.conversation_id: message.seq for message in new}  # batch order: the last wins
            head_write = self._bind_heads(statements, heads)
            await self._run_all(writes)
            rows_written = True
            if head_write is not None:
                await self._rows(head_write)
        except BaseException:
            if rows_written:  # roll forward: every row is acknowledged, only the heads are owed
                self._owed_heads.update(heads)
                logger.warning("head write failed for %d conversations; owed to the next commit", len(heads))
            else:  # roll back: reload the heads (but keep owed ones) and reuse the seqs taken
                for conversation_id in conversations - self._owed_heads.keys():
                    self._last_seq.pop(conversation_id, None)
            raise
        return results

    async def _write_owed_heads(self, statements: _Statements) -> None:
        """Write the heads a failed commit left owed: nothing may build on them before they stand."""
        head_write = self._bind_heads(statements, self._owed_heads)
        if head_write is not None:
            await self._rows(head_write)
            logger.info("wrote %d owed conversation heads", len(self._owed_heads))
            self._owed_heads.clear()

    async def _already_stored(
        self, statements: _Statements, batch: Sequence[AcceptedMessage]
    ) -> dict[tuple[int, int, str], CommittedMessage]:
        """The committed messages among ``batch``'s (conversation, sender, cmid) keys."""
        keys = list(dict.fromkeys((m.conversation_id, m.sender_id, m.cmid) for m in batch))
        pointers = await self._run_all([statements.select_cmid.bind(key) for key in keys])
        candidates = [
            (key, int(rows[0][0]), int(rows[0][1]))
            for key, rows in zip(keys, pointers, strict=True)
            if rows and rows[0][0] <= self._last_seq[key[0]]
        ]
        found_rows = await self._run_all(
            [
                statements.select_messages.bind((key[0], self._bucket(seq), seq, seq))
                for key, seq, _ in candidates
            ]
        )
        found: dict[tuple[int, int, str], CommittedMessage] = {}
        for (key, seq, message_id), rows in zip(candidates, found_rows, strict=True):
            if rows and rows[0][1] == message_id:
                found[key] = _message(rows[0])
            else:
                logger.info("conversation %d: ignoring an uncommitted cmid pointer to seq %d", key[0], seq)
        return found

    def _assign(
        self, batch: Sequence[AcceptedMessage], stored: dict[tuple[int, int, str], CommittedMessage]
    ) -> tuple[list[CommitResult], list[CommittedMessage]]:
        """Results in batch order and the new messages, advancing the cached heads."""
        results: list[CommitResult] = []
        new: list[CommittedMessage] = []
        for m in batch:
            key = (m.conversation_id, m.sender_id, m.cmid)
            duplicate = key in stored  # a resend inside the same batch is a duplicate too
            if not duplicate:
                seq = self._last_seq[m.conversation_id] + 1
                self._last_seq[m.conversation_id] = seq
                stored[key] = CommittedMessage(
                    m.conversation_id, m.message_id, seq, *key[1:], m.text, m.created_at_ms
                )
                new.append(stored[key])
            results.append(
                CommitResult(stored[key], duplicate=duplicate, sender_device_id=m.sender_device_id)
            )
        return results, new

    def _bind_rows(self, statements: _Statements, message: CommittedMessage) -> tuple[object, object]:
        cid, seq = message.conversation_id, message.seq
        return (
            statements.insert_message.bind(
                [
                    *(cid, self._bucket(seq), seq, message.message_id),
                    *(message.sender_id, message.cmid, message.text, message.created_at_ms),
                ]
            ),
            statements.insert_cmid.bind((cid, message.sender_id, message.cmid, seq, message.message_id)),
        )

    @staticmethod
    def _bind_heads(statements: _Statements, heads: dict[int, int]) -> object | None:
        """One write for the commit point: a logged batch is all-or-nothing across partitions."""
        bound = [statements.set_head.bind((seq, cid)) for cid, seq in heads.items()]
        if len(bound) <= 1:
            return bound[0] if bound else None
        batch: _Batch = BatchStatement(batch_type=BatchType.LOGGED)
        for statement in bound:
            batch.add(statement)
        batch.is_idempotent = True
        return batch

    async def _read_messages(self, conversation_id: int, first: int, last: int) -> list[CommittedMessage]:
        """Seqs ``first..last`` of a conversation, ascending, one query per bucket."""
        statements = await self._prepared()
        ranges = bucket_ranges(first, last, self._bucket_size)
        found = await self._run_all([statements.select_messages.bind((conversation_id, *r)) for r in ranges])
        messages = sorted((_message(row) for rows in found for row in rows), key=lambda m: m.seq)
        if len(messages) != max(last - first + 1, 0):
            args = (conversation_id, len(messages), first, last)
            logger.warning("conversation %d: %d rows for seqs %d..%d; reads below write consistency?", *args)
        return messages

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
        head = (await self._read_heads([conversation_id])).get(conversation_id, 0)
        plan = plan_page(head, limit=limit, before=before, after=after, around=around)
        return MessagePage(await self._read_messages(conversation_id, plan.first, plan.last), plan.has_more)

    async def latest_seqs(self, conversation_ids: Collection[int]) -> dict[int, int]:
        """The heads: a conversation's latest committed seq, one single-row read each."""
        return await self._read_heads(conversation_ids)

    async def last_messages(self, conversation_ids: Collection[int]) -> dict[int, CommittedMessage]:
        """The message at each head."""
        heads = await self._read_heads(conversation_ids)
        statements = await self._prepared()
        found = await self._run_all(
            [
                statements.select_messages.bind((cid, self._bucket(seq), seq, seq))
                for cid, seq in heads.items()
            ]
        )
        return {message.conversation_id: message for rows in found for message in map(_message, rows)}

    async def unread_counts(self, read_up_to: Mapping[int, int], reader_id: int) -> dict[int, int]:
        """See ``hubbub.stores.MessageStore.unread_counts``; the conversations are counted concurrently."""
        ids = list(read_up_to)
        slots = asyncio.Semaphore(_CONCURRENT_COUNTS)

        async def count(conversation_id: int) -> int:
            async with slots:
                return await self._count_after(conversation_id, read_up_to[conversation_id], reader_id)

        counts = await asyncio.gather(*(count(cid) for cid in ids))
        return dict(zip(ids, counts, strict=True))

    async def _count_after(self, conversation_id: int, after_seq: int, exclude_sender: int) -> int:
        """Unread messages: seqs ``after_seq + 1..head`` not sent by ``exclude_sender``.

        ``sender_id`` is no key column, so it cannot be a WHERE condition without ALLOW
        FILTERING (and ``!=`` not at all before Cassandra 5). The unread range is a key range
        whose size is known, so the store reads just its ``sender_id`` column, page by page,
        and counts here: cost grows with the unread count, never with the conversation.
        """
        head = (await self._read_heads([conversation_id])).get(conversation_id, 0)
        statements = await self._prepared()
        ranges = bucket_ranges(max(after_seq + 1, 1), head, self._bucket_size)

        async def count(bucket_range: tuple[int, int, int]) -> int:
            statement = statements.select_senders.bind((conversation_id, *bucket_range))
            total = 0
            async for page in _pages(self._session, statement, self._profile):
                total += sum(1 for (sender_id,) in page if sender_id != exclude_sender)
            return total

        return sum(await asyncio.gather(*(count(r) for r in ranges)))

    async def close(self) -> None:
        """Write any owed heads, then shut the cluster down if this store opened it (``connect``)."""
        if self._owed_heads:
            try:
                await self._write_owed_heads(await self._prepared())
            except Exception:
                logger.exception(
                    "%d owed heads stay unwritten: those commits roll back", len(self._owed_heads)
                )
        if self._owns_cluster:
            await asyncio.to_thread(self._session.cluster.shutdown)


async def connect(
    hosts: list[str], keyspace: str, *, consistency: int = ConsistencyLevel.LOCAL_QUORUM
) -> CassandraMessageStore:
    """A store on a new token-aware cluster connection to ``hosts`` (``host[:port]``); it owns the cluster."""
    _keyspace(keyspace)  # fail before opening connections
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
        consistency_level=consistency,
    )
    cluster = Cluster(
        contact_points=[contact_point(host) for host in hosts],
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    try:
        session = await asyncio.to_thread(cluster.connect)  # blocks while it discovers the ring
    except Exception as exc:
        await asyncio.to_thread(cluster.shutdown)  # idempotent: the driver may have done it already
        raise ConnectionError(f"cannot connect to Cassandra at {', '.join(hosts)}") from exc
    logger.info("connected to Cassandra at %s (keyspace %s)", ", ".join(hosts), keyspace)
    return CassandraMessageStore(session, keyspace, consistency=consistency, owns_cluster=True)
