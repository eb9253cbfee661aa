"""The Cassandra message store: history partitioned by conversation and a bucket of seq.

The schema is in ``persister.cassandra_store.schema``. The persister owning a conversation
is its single writer (DESIGN.md), so it assigns seqs from a cached head, loaded from
``conversation_heads`` on a miss. A commit (0) looks its (conversation, sender, cmid) keys up
among the dedupe pointers; (1) binds every statement, so a bad value fails before anything is
written; (2) writes the message rows and dedupe pointers, packed into unlogged batches
(``persister.cassandra_store.batching``) sent concurrently, until all are acknowledged;
(3) with a fence only, passes the fenced commit point (one lightweight transaction,
``persister.cassandra_store.fencing``); (4) writes the new heads:
one row, or a logged batch (all-or-nothing) when the commit spans conversations.

The head is what readers trust: they read it first and never look past it, so seqs
``1..head`` are dense and rows past it invisible. Rows cannot lag the head, which is written
only after them, as long as reads see writes (R + W > RF; LOCAL_QUORUM both by default). A
head write is stamped with its seq (``USING TIMESTAMP``), so heads only grow, whatever order
writes land in. A failure before (4) rolls back: the cached heads are reloaded and the orphan
rows past them are overwritten when their seqs are given out again (each commit's writes are
stamped later than the last: the wall clock, or the fenced stamps). A failure in (4) rolls
forward: every row was acknowledged, so the cached heads stand and are written first thing in
the next commit (or ``close``), before any resend is answered as a duplicate. A dedupe pointer
counts only if its seq is at most the head *and* the row there carries its message_id; a
pointer left by a rolled-back commit, whose seq may since hold another message, is ignored
and overwritten: each cmid is stored once.

Because seqs are dense a page is an exact seq range (``persister.cassandra_store.paging``).

What a batch of N new messages in C conversations costs, heads cached (a miss adds one
``IN`` read per 100 conversations, and one serial read of the shard when fenced). Requests
in a step are sent together, so a commit waits for three round trips in a row (four fenced):

=========================  ================================  ================================
step                       before (one request a row)        now
=========================  ================================  ================================
(0) dedupe lookup          N reads                           ceil(N/100) ``key IN ?`` reads
(0) resends among them     one read each                     one ``seq IN ?`` read a partition
(2) rows and pointers      2N writes                         unlogged batches: a conversation's
                                                             rows past 4 KiB alone (they share
                                                             a partition), all else 10
                                                             partitions / 4 KiB a batch:
                                                             from (C + N)/10 to C + N/10
(3) fence (if fenced)      1 LWT                             1 LWT
(4) heads                  1 write (logged batch if C > 1)   the same
total, N = 100             301 requests (+1 LWT)             13 (C = 1) to 17 (C = 50) (+1 LWT)
=========================  ================================  ================================

Measured side by side on one node (``tests.support.cassandra``, a loaded 2-core machine,
100 messages of 40 characters, 30 batches each): the client's CPU per batch fell from
~72 ms to 12-17 ms, the Cassandra JVM's CPU for the run roughly halved, median commit
time from ~165 ms to 75-120 ms. What is left is the server applying the writes (~50 ms a
packed batch on the tests' C1-only JVM): a commit is still about N + C mutations, since each
dedupe pointer is a partition of its own; a pointer table partitioned by conversation and a
hash slot of the key would be the next step, at the price of bigger partitions. A logged
head batch measured no dearer than an unlogged one, so heads stay all-or-nothing. A batch
of 100 resends (all duplicates) costs 2 requests in one conversation, C + 1 across C,
instead of 200. The chat pipeline (10 pairs, window 5, ``python -m bench.cassandra chat``,
run back to back): 257 delivered/s, p50 440 ms before; 551-843/s, p50 115-170 ms now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence

from cassandra import ConsistencyLevel  # type: ignore[import-untyped]
from cassandra.cluster import EXEC_PROFILE_DEFAULT  # type: ignore[import-untyped]
from cassandra.query import BatchStatement, BatchType, tuple_factory  # type: ignore[import-untyped]

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.stores import CatchUp, Fence, MessagePage
from persister.cassandra_store.batching import ROW_OVERHEAD, Write, pack
from persister.cassandra_store.driver import (
    Row,
    Session,
    check_keyspace,
    connect_session,
    fetch_all,
    in_lists,
    pages,
    run_all,
)
from persister.cassandra_store.fencing import Claim, ShardFences
from persister.cassandra_store.paging import bucket_ranges, plan_page
from persister.cassandra_store.schema import BUCKET_SIZE
from persister.cassandra_store.statements import Statements, prepare

__all__ = ["CassandraMessageStore", "connect"]

logger = logging.getLogger(__name__)

# Conversations counted at once for one unread_counts call (each count may read several pages).
_CONCURRENT_COUNTS = 16
_LOCAL_LEVELS = frozenset({ConsistencyLevel.LOCAL_QUORUM, ConsistencyLevel.LOCAL_ONE})
_Key = tuple[int, int, str]


def _message(row: Row) -> CommittedMessage:
    return CommittedMessage(*row)


class CassandraMessageStore:
    """``MessageStore`` on Apache Cassandra; see the module docstring for the commit protocol.

    ``session`` must use execution profiles (the driver's default); the store runs its
    requests under its own profiles (tuple rows, ``consistency``; serial reads at
    LOCAL_SERIAL when ``consistency`` is a LOCAL_ level, else SERIAL) and leaves the
    session's defaults alone. It shuts the cluster down on ``close`` only if ``owns_cluster``.
    """

    def __init__(
        self,
        session: Session,
        keyspace: str,
        *,
        bucket_size: int = BUCKET_SIZE,
        consistency: int = ConsistencyLevel.LOCAL_QUORUM,
        owns_cluster: bool = False,
    ) -> None:
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be positive, got {bucket_size}")
        self._session = session
        self._keyspace = check_keyspace(keyspace)
        self._bucket_size = bucket_size
        self._owns_cluster = owns_cluster
        serial = ConsistencyLevel.LOCAL_SERIAL if consistency in _LOCAL_LEVELS else ConsistencyLevel.SERIAL
        self._serial = serial
        self._profile = session.execution_profile_clone_update(
            EXEC_PROFILE_DEFAULT, row_factory=tuple_factory, consistency_level=consistency
        )
        serial_profile = session.execution_profile_clone_update(
            EXEC_PROFILE_DEFAULT, row_factory=tuple_factory, consistency_level=serial
        )
        self._fences = ShardFences(
            session, profile=self._profile, serial_profile=serial_profile, serial=serial
        )
        self._statements: Statements | None = None
        self._preparing = asyncio.Lock()
        self._last_seq: dict[int, int] = {}
        self._owed_heads: dict[int, int] = {}
        self._last_stamp = 0
        self._commit_lock = asyncio.Lock()

    @property
    def session(self) -> Session:
        """The driver session (for schema work and diagnostics)."""
        return self._session

    async def _prepared(self) -> Statements:
        """The prepared statements, prepared once on first use."""
        if self._statements is not None:
            return self._statements
        async with self._preparing:
            if self._statements is None:
                self._statements = await prepare(
                    self._session, self._keyspace, serial_consistency=self._serial
                )
            return self._statements

    def _bucket(self, seq: int) -> int:
        return seq // self._bucket_size

    async def _rows(self, statement: object) -> list[Row]:
        return await fetch_all(self._session, statement, self._profile)

    async def _run_all(self, statements: Sequence[object]) -> list[list[Row]]:
        return await run_all(self._session, statements, self._profile)

    async def _read_heads(self, conversation_ids: Collection[int]) -> dict[int, int]:
        statements = await self._prepared()
        ids = list(dict.fromkeys(conversation_ids))
        found = await self._run_all([statements.select_heads.bind((part,)) for part in in_lists(ids)])
        return {int(cid): int(seq) for rows in found for cid, seq in rows if seq}

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        """Store ``batch``, heads last; see the module docstring and ``MessageStore.commit``."""
        if not batch:
            return []
        async with self._commit_lock:  # one batch at a time, in call order (asyncio.Lock is FIFO)
            return await self._commit(batch, fence)

    async def _commit(self, batch: Sequence[AcceptedMessage], fence: Fence | None) -> list[CommitResult]:
        conversations = {message.conversation_id for message in batch}
        heads: dict[int, int] = {}
        committed = False
        try:
            statements = await self._prepared()
            await self._write_owed_heads(statements)
            claim = None
            if fence is not None:
                claim, new_claim = await self._fences.claim(statements, fence)
                if new_claim:  # another owner may have moved any conversation of the shard
                    self._last_seq.clear()
            await self._load_heads(statements, conversations - self._last_seq.keys(), fence)
            stored = await self._already_stored(statements, batch)
            results, new = self._assign(batch, stored)
            stamp = self._stamp(fence, claim)
            writes = pack(w for message in new for w in self._bind_rows(statements, message, stamp))
            heads = {message.conversation_id: message.seq for message in new}  # batch order: the last wins
            head_write = self._bind_heads(statements, heads)
            await self._run_all(writes)
            if fence is not None:
                await self._fences.commit_point(statements, fence, heads)
            committed = True
            if head_write is not None:
                await self._rows(head_write)
        except BaseException:
            if committed:  # roll forward: every row is acknowledged, only the heads are owed
                self._owed_heads.update(heads)
                logger.warning("head write failed for %d conversations; owed to the next commit", len(heads))
            else:  # roll back: reload the heads (but keep owed ones) and reuse the seqs taken
                for conversation_id in conversations - self._owed_heads.keys():
                    self._last_seq.pop(conversation_id, None)
            raise
        return results

    async def fence(self, fence: Fence) -> None:
        """Take ``fence.shard`` over before any batch; see ``hubbub.stores.MessageStore.fence``.

        The claim's lightweight transaction alone (a serial read instead when this store
        already holds the epoch), in call order with the commits.
        """
        async with self._commit_lock:
            if await self._fences.take(await self._prepared(), fence):
                self._last_seq.clear()  # another owner may have moved any conversation of the shard

    def _stamp(self, fence: Fence | None, claim: Claim | None) -> int:
        """This commit's write timestamp (µs): after every earlier one of this store."""
        if fence is not None and claim is not None:
            return claim.stamp(fence.shard)
        self._last_stamp = max(time.time_ns() // 1000, self._last_stamp + 1)
        return self._last_stamp

    async def _load_heads(
        self, statements: Statements, conversation_ids: set[int], fence: Fence | None
    ) -> None:
        """Cache the heads of ``conversation_ids``; fenced, the shard's serial heads count too."""
        if not conversation_ids:
            return
        heads = dict.fromkeys(conversation_ids, 0) | await self._read_heads(conversation_ids)
        if fence is not None:
            shard_heads = await self._fences.heads(statements, fence.shard, list(conversation_ids))
            for conversation_id, seq in shard_heads.items():
                if seq > heads[conversation_id]:  # committed, its head write not landed: write it
                    heads[conversation_id] = self._owed_heads[conversation_id] = seq
        self._last_seq.update(heads)

    async def _write_owed_heads(self, statements: Statements) -> None:
        """Write the heads a failed commit left owed: nothing may build on them before they stand."""
        head_write = self._bind_heads(statements, self._owed_heads)
        if head_write is not None:
            await self._rows(head_write)
            logger.info("wrote %d owed conversation heads", len(self._owed_heads))
            self._owed_heads.clear()

    async def _already_stored(
        self, statements: Statements, batch: Sequence[AcceptedMessage]
    ) -> dict[_Key, CommittedMessage]:
        """The committed messages among ``batch``'s (conversation, sender, cmid) keys."""
        keys = list(dict.fromkeys((m.conversation_id, m.sender_id, m.cmid) for m in batch))
        pointers = await self._run_all([statements.select_keys.bind((part,)) for part in in_lists(keys)])
        candidates = [
            ((int(key[0]), int(key[1]), str(key[2])), int(seq), int(message_id))
            for rows in pointers
            for key, seq, message_id in rows
            if seq <= self._last_seq[key[0]]
        ]
        wanted: dict[tuple[int, int], list[int]] = {}  # the rows pointed at, by partition
        for key, seq, _ in candidates:
            wanted.setdefault((key[0], self._bucket(seq)), []).append(seq)
        reads = [
            statements.select_messages_at.bind((*partition, part))
            for partition, seqs in wanted.items()
            for part in in_lists(seqs)
        ]
        rows_at = {
            (m.conversation_id, m.seq): m for rows in await self._run_all(reads) for m in map(_message, rows)
        }
        found: dict[_Key, CommittedMessage] = {}
        for key, seq, message_id in candidates:
            row = rows_at.get((key[0], seq))
            if row is not None and row.message_id == message_id:
                found[key] = row
            else:
                logger.info("conversation %d: ignoring an uncommitted cmid pointer to seq %d", key[0], seq)
        return found

    def _assign(
        self, batch: Sequence[AcceptedMessage], stored: dict[_Key, CommittedMessage]
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

    def _bind_rows(
        self, statements: Statements, message: CommittedMessage, stamp: int
    ) -> tuple[Write, Write]:
        """The message's row and its dedupe pointer, with their partitions and sizes for ``pack``."""
        cid, seq = message.conversation_id, message.seq
        key = (cid, message.sender_id, message.cmid)
        cmid_bytes = len(message.cmid.encode())
        row = statements.insert_message.bind(
            [
                *(cid, self._bucket(seq), seq, message.message_id),
                *(message.sender_id, message.cmid, message.text, message.created_at_ms, stamp),
            ]
        )
        pointer = statements.insert_key.bind((key, seq, message.message_id, stamp))
        return (
            Write((cid, self._bucket(seq)), row, ROW_OVERHEAD + cmid_bytes + len(message.text.encode())),
            Write(key, pointer, ROW_OVERHEAD + cmid_bytes),
        )

    @staticmethod
    def _bind_heads(statements: Statements, heads: dict[int, int]) -> object | None:
        """One write for the heads: a logged batch is all-or-nothing across partitions."""
        bound = [statements.set_head.bind((seq, seq, cid)) for cid, seq in heads.items()]
        if len(bound) <= 1:
            return bound[0] if bound else None
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        for statement in bound:
            batch.add(statement)
        batch.is_idempotent = True
        head_batch: object = batch
        return head_batch

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

    async def catch_up(self, cursors: Mapping[int, int], *, limit: int) -> dict[int, CatchUp]:
        """See ``MessageStore.catch_up``: the heads, then every moved conversation's seqs at once.

        Seqs are dense, so the page after a cursor is the exact range ``cursor + 1 ..`` capped at
        ``limit`` and the head: key-range reads, all in flight together.
        """
        heads = await self._read_heads(cursors)
        plans = {
            cid: plan_page(head, limit=limit, after=cursors[cid])
            for cid, head in heads.items()
            if head > cursors[cid]
        }
        pages = await asyncio.gather(
            *(self._read_messages(cid, plan.first, plan.last) for cid, plan in plans.items())
        )
        return {cid: CatchUp(heads[cid], page) for cid, page in zip(plans, pages, strict=True)}

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
        FILTERING. The unread range is a key range whose size is known, so the store reads
        just its ``sender_id`` column, page by page, and counts here: cost grows with the
        unread count, never with the conversation.
        """
        head = (await self._read_heads([conversation_id])).get(conversation_id, 0)
        statements = await self._prepared()
        ranges = bucket_ranges(max(after_seq + 1, 1), head, self._bucket_size)

        async def count(bucket_range: tuple[int, int, int]) -> int:
            statement = statements.select_senders.bind((conversation_id, *bucket_range))
            total = 0
            async for page in pages(self._session, statement, self._profile):
                total += sum(1 for (sender_id,) in page if sender_id != exclude_sender)
            return total

        return sum(await asyncio.gather(*(count(r) for r in ranges)))

    async def close(self) -> None:
        """Write any owed heads, then shut the cluster down if this store opened it (``connect``)."""
        if self._owed_heads:
            try:
                await self._write_owed_heads(await self._prepared())
            except Exception:
                logger.exception("%d owed heads stay unwritten until the next owner's", len(self._owed_heads))
        if self._owns_cluster:
            await asyncio.to_thread(self._session.cluster.shutdown)


async def connect(
    hosts: Sequence[str],
    keyspace: str,
    *,
    consistency: int = ConsistencyLevel.LOCAL_QUORUM,
    local_dc: str | None = None,
) -> CassandraMessageStore:
    """A store on a new token-aware cluster connection to ``hosts`` (``host[:port]``); it owns the cluster."""
    check_keyspace(keyspace)  # fail before opening connections
    session = await connect_session(hosts, consistency=consistency, local_dc=local_dc)
    return CassandraMessageStore(session, keyspace, consistency=consistency, owns_cluster=True)
