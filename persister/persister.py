"""The persister: the single writer that commits accepted messages in batches.

Accepted messages come from an ``AcceptedSource`` (``hubbub.handoffs``): the in-memory queue of
one node, or a cluster's JetStream shards this persister holds leases on, each batch carrying
the ``Fence`` to commit under. Two stages run as a pipeline: one takes the next batch (whatever
queued up meanwhile, so commit cost is shared under load without adding latency when idle) and
starts its commit, by default while the last one is still committing (the store commits them in
order), or once it is over (``commits_in_flight=1``: larger batches, for one node); the
other waits for each commit in turn, passes the results to ``on_committed`` (fan-out, acks,
push, the committed stream) and only then settles the batch (``done``: a JetStream ack).
Results are delivered in commit order, and only committed messages are ever delivered.

A failed commit (a full disk, a database that refuses writes) is settled with ``retry`` and a
delay that doubles with each failure in a row. A source that redelivers (JetStream: the message
is durable and the device was acknowledged already) brings the batch back after the delay, and
nobody is told anything. A source that does not (one node's queue) drops it, and ``on_failed``
is told at once with the same hint, so the senders' devices hear ``unavailable`` and resend on
purpose (the store's cmid uniqueness keeps that idempotent) instead of waiting on their resend
timers. Holding a batch here would hold the whole pipeline; the next batch is simply tried, so
recovery is automatic when the store writes again. The failures are logged once per kind per
minute with a count (``hubbub.failure_log``). A commit refused for its fence (``FencedOut``: a
newer owner took the shard) is settled with ``fenced_out`` and told to nobody: the new owner
commits those messages.

``on_committed`` failing after a commit (a fan-out or publish that broke) settles a redelivering
batch with ``retry`` too: the redelivered messages commit as duplicates (the same results) and
are handed on again; with one node's queue, devices catch up through sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from hubbub import cancelling
from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.errors import CommitFailed
from hubbub.failure_log import FailureLog
from hubbub.handoffs import AcceptedBatch, AcceptedSource
from hubbub.stores import FencedOut, MessageStore

__all__ = ["COMMITS_IN_FLIGHT", "CommittedHandler", "FailedHandler", "Persister", "retry_after_ms"]

logger = logging.getLogger(__name__)

CommittedHandler = Callable[[Sequence[CommitResult]], Awaitable[None]]
FailedHandler = Callable[[Sequence[AcceptedMessage], int], None]
"""Told the messages of a batch that failed to commit, and in how many ms a resend may work."""
# Batches committing at once, by default. More would only queue in the store; meanwhile the next
# batch keeps growing in the accepted source, and a slow store slows intake instead.
COMMITS_IN_FLIGHT = 2
# The retry hint doubles with each failed batch in a row, so a store that stays down is not
# hammered by resends: 1 s, 2 s, 4 s ... up to 30 s.
_RETRY_FIRST_MS = 1_000
_RETRY_MAX_MS = 30_000


def retry_after_ms(failures_in_a_row: int) -> int:
    """The retry hint after ``failures_in_a_row`` (>= 1) failed commits."""
    return min(_RETRY_MAX_MS, _RETRY_FIRST_MS << min(failures_in_a_row - 1, 5))


class Persister:
    """Batches accepted messages into ``store`` and reports what was committed."""

    def __init__(
        self,
        store: MessageStore,
        accepted: AcceptedSource,
        on_committed: CommittedHandler,
        *,
        on_failed: FailedHandler | None = None,
        max_batch: int = 500,
        commits_in_flight: int = COMMITS_IN_FLIGHT,
        min_commit_interval_s: float = 0.0,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
        failure_log: FailureLog | None = None,
    ) -> None:
        """``commits_in_flight``: batches committing at once (at least one).

        With one, the next batch is taken only once the last one's commit is over, so it gathers
        everything accepted meanwhile: fewer, larger commits, for a store whose cost is mostly per
        commit and which commits one batch at a time anyway (one node's SQLite writer process
        writes the index pages a commit touched once per commit, however many rows changed them).
        With two, the next batch is already on its way while the last one commits (a cluster's
        shards, each read into batches of its own).

        ``min_commit_interval_s``: a commit starts no sooner than this after the one before started,
        so that at a moderate rate a batch gathers what comes meanwhile. Why: a commit's cost is
        mostly fixed (one node's SQLite writes each index page it touched once per commit, ~80 µs,
        and each batch crosses to the writer process and back), and without a pause a batch was
        whatever came during the last round trip: two or three messages at a few thousand a second,
        so the platform's CPU per message doubled at half the rate it can take. A message after a
        quiet spell (longer than the interval) is committed at once; under full load the commits
        take longer than the interval and nothing waits. ``pause`` waits out the rest of the interval
        (tests hold it to show what a batch gathers meanwhile).
        """
        if commits_in_flight < 1:
            raise ValueError("a persister commits at least one batch at a time")
        self._store = store
        self._source = accepted
        self._on_committed = on_committed
        self._on_failed = on_failed
        self._max_batch = max_batch
        self._failures = failure_log or FailureLog(logger, "commit")
        self._failed_in_a_row = 0
        self._in_flight = commits_in_flight
        self._min_interval_s = min_commit_interval_s
        self._pause = pause
        # Commits in the order started (at most ``commits_in_flight`` unfinished), with their batches.
        self._committing: asyncio.Queue[tuple[AcceptedBatch, asyncio.Task[list[CommitResult]]]] = (
            asyncio.Queue()
        )

    async def run(self) -> None:
        """Commit and deliver until cancelled (a stage that fails ends both, with its error).

        Not a ``TaskGroup``: the deliver stage publishes over NATS, which can swallow the one
        cancellation a group sends and leave the stage waiting for the next batch, for ever
        (``hubbub.cancelling``); each stage is cancelled for certain instead.
        """
        stages = [
            asyncio.create_task(self._commit_stage(), name="persister-commit"),
            asyncio.create_task(self._deliver_stage(), name="persister-deliver"),
        ]
        try:
            done, _ = await asyncio.wait(stages, return_when=asyncio.FIRST_COMPLETED)
            for stage in done:
                stage.result()  # its failure, raised here
        finally:
            for stage in stages:
                cancelling.cancel(stage)
            await asyncio.gather(*stages, return_exceptions=True)
            unfinished = []
            while not self._committing.empty():
                unfinished.append(self._committing.get_nowait()[1])
                unfinished[-1].cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)  # ended before the store closes

    async def flush(self) -> None:
        """Wait until everything offered so far is committed and delivered (``run`` must be running).

        Called at shutdown once ingest has stopped, so nothing new arrives meanwhile.
        """
        await self._source.settled()

    async def _commit_stage(self) -> None:
        unfinished: deque[asyncio.Task[list[CommitResult]]] = deque()
        loop = asyncio.get_running_loop()
        last_start = -self._min_interval_s
        while True:
            while unfinished and unfinished[0].done():
                unfinished.popleft()
            if len(unfinished) >= self._in_flight:
                # Woken with the deliver stage, as the oldest commit ends (its outcome is the
                # deliver stage's): the next batch is taken then, as large as it has grown.
                await asyncio.wait((unfinished[0],))
                continue
            pause = last_start + self._min_interval_s - loop.time()
            if pause > 0:
                await self._pause(pause)  # the batch gathers what comes meanwhile
            batch = await self._source.next_batch(self._max_batch)
            last_start = loop.time()
            commit = asyncio.create_task(
                self._store.commit(batch.messages, fence=batch.fence), name="persister-commit-batch"
            )
            unfinished.append(commit)
            self._committing.put_nowait((batch, commit))

    async def _deliver_stage(self) -> None:
        while True:
            batch, commit = await self._committing.get()
            try:
                results = await commit
            except FencedOut:
                logger.info("commit fenced out of shard %s: a newer owner has it", batch.fence)
                await self._settle(batch.fenced_out())
                continue
            except Exception as exc:  # noqa: BLE001 - any failure of the store: retry or tell the senders
                await self._settle(batch.retry(self._failed(batch, exc)))
                continue
            self._failed_in_a_row = 0
            self._failures.succeeded()
            logger.debug("committed %d messages", len(results))
            try:
                await self._on_committed(results)
            except Exception:
                if batch.redelivers:
                    logger.exception("handing on committed messages failed; they come again")
                    await self._settle(batch.retry(retry_after_ms(1)))
                    continue
                logger.exception("delivery after commit failed; devices catch up through sync")
            await self._settle(batch.done(results))

    async def _settle(self, settling: Awaitable[None]) -> None:
        try:
            await settling
        except Exception:
            # A lost JetStream ack redelivers the batch, which commits as duplicates: no harm.
            logger.exception("settling a batch failed; it may be delivered again")

    def _failed(self, batch: AcceptedBatch, exc: Exception) -> int:
        """Count and log a failed commit; tell the senders when the batch will not come again."""
        # CommitFailed comes from below with the reason in its message: its own stack says nothing.
        self._failures.failed(exc, traceback=not isinstance(exc, CommitFailed))
        self._failed_in_a_row += 1
        delay_ms = retry_after_ms(self._failed_in_a_row)
        if self._on_failed is None or batch.redelivers:
            return delay_ms
        try:
            self._on_failed(batch.messages, delay_ms)
        except Exception:
            logger.exception("telling the senders of a failed commit failed; their outboxes resend")
        return delay_ms
