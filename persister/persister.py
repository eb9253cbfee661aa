"""The persister: the single writer that commits accepted messages in batches.

Accepted messages arrive on a queue (the in-process hand-off from ingest). Two stages run
as a pipeline: one takes whatever queued up meanwhile as the next batch — so commit cost is
shared under load without adding latency when idle — and starts its commit while the last
one is still committing (the store commits them in order); the other waits for each commit
in turn and passes the results to ``on_committed`` (fan-out, acks, push). Results are
delivered in commit order, and only committed messages are ever delivered.

A failed commit (a full disk, a database that refuses writes) is dropped: nothing was
acknowledged, and ``on_failed`` is told at once with a retry hint, so the senders' devices
hear ``unavailable`` and resend on purpose (the store's cmid uniqueness keeps that
idempotent) instead of waiting on their resend timers. Nothing is retried here: holding
the batch would hold the whole pipeline, while a resend finds the store as it then is, and
the next batch is simply tried, so recovery is automatic when the store writes again. The
failures are logged once per kind per minute with a count (``hubbub.failure_log``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.errors import CommitFailed
from hubbub.failure_log import FailureLog
from hubbub.stores import MessageStore

__all__ = ["CommittedHandler", "FailedHandler", "Persister", "retry_after_ms"]

logger = logging.getLogger(__name__)

CommittedHandler = Callable[[Sequence[CommitResult]], Awaitable[None]]
FailedHandler = Callable[[Sequence[AcceptedMessage], int], None]
"""Told the messages of a batch that failed to commit, and in how many ms a resend may work."""
# Batches committing at once. More would only queue in the store; meanwhile the next batch
# keeps growing in the accepted queue, and a slow store slows intake instead.
_IN_FLIGHT = 2
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
        accepted: asyncio.Queue[AcceptedMessage],
        on_committed: CommittedHandler,
        *,
        on_failed: FailedHandler | None = None,
        max_batch: int = 500,
        failure_log: FailureLog | None = None,
    ) -> None:
        self._store = store
        self._queue = accepted
        self._on_committed = on_committed
        self._on_failed = on_failed
        self._max_batch = max_batch
        self._failures = failure_log or FailureLog(logger, "commit")
        self._failed_in_a_row = 0
        self._slots = asyncio.Semaphore(_IN_FLIGHT)
        # Commits in the order started (at most _IN_FLIGHT unfinished), with their batches.
        self._committing: asyncio.Queue[tuple[list[AcceptedMessage], asyncio.Task[list[CommitResult]]]] = (
            asyncio.Queue()
        )

    async def run(self) -> None:
        """Commit and deliver until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._commit_stage(), name="persister-commit")
                group.create_task(self._deliver_stage(), name="persister-deliver")
        finally:
            unfinished = []
            while not self._committing.empty():
                unfinished.append(self._committing.get_nowait()[1])
                unfinished[-1].cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)  # ended before the store closes

    async def flush(self) -> None:
        """Wait until everything queued so far is committed and delivered (``run`` must be running).

        Called at shutdown once ingest has stopped, so nothing new arrives meanwhile.
        """
        await self._queue.join()

    async def _commit_stage(self) -> None:
        while True:
            await self._slots.acquire()
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            commit = asyncio.create_task(self._store.commit(batch), name="persister-commit-batch")
            self._committing.put_nowait((batch, commit))

    async def _deliver_stage(self) -> None:
        while True:
            batch, commit = await self._committing.get()
            try:
                results = await commit
            except Exception as exc:  # noqa: BLE001 - any failure of the store: tell the senders
                results = []
                self._failed(batch, exc)
            else:
                self._failed_in_a_row = 0
                self._failures.succeeded()
            finally:
                self._slots.release()  # the next batch may start committing while this one is delivered
            logger.debug("committed %d messages", len(results))
            try:
                if results:
                    await self._on_committed(results)
            except Exception:
                logger.exception("delivery after commit failed; devices catch up through sync")
            finally:
                for _ in batch:  # the queue's join() waits for these
                    self._queue.task_done()

    def _failed(self, batch: Sequence[AcceptedMessage], exc: Exception) -> None:
        # CommitFailed comes from below with the reason in its message: its own stack says nothing.
        self._failures.failed(exc, traceback=not isinstance(exc, CommitFailed))
        self._failed_in_a_row += 1
        if self._on_failed is None:
            return
        try:
            self._on_failed(batch, retry_after_ms(self._failed_in_a_row))
        except Exception:
            logger.exception("telling the senders of a failed commit failed; their outboxes resend")
