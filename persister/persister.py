"""The persister: the single writer that commits accepted messages in batches.

Accepted messages arrive on a queue (the in-process hand-off from ingest). Two stages run
as a pipeline: one takes whatever queued up meanwhile as the next batch — so commit cost is
shared under load without adding latency when idle — and starts its commit while the last
one is still committing (the store commits them in order); the other waits for each commit
in turn and passes the results to ``on_committed`` (fan-out, acks, push). Results are
delivered in commit order, and only committed messages are ever delivered. A failed
commit is logged and dropped: nothing was acknowledged, so the senders' outboxes resend,
and the store's cmid uniqueness keeps that idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.stores import MessageStore

__all__ = ["CommittedHandler", "Persister"]

logger = logging.getLogger(__name__)

CommittedHandler = Callable[[Sequence[CommitResult]], Awaitable[None]]
# Batches committing at once. More would only queue in the store; meanwhile the next batch
# keeps growing in the accepted queue, and a slow store slows intake instead.
_IN_FLIGHT = 2


class Persister:
    """Batches accepted messages into ``store`` and reports what was committed."""

    def __init__(
        self,
        store: MessageStore,
        accepted: asyncio.Queue[AcceptedMessage],
        on_committed: CommittedHandler,
        *,
        max_batch: int = 500,
    ) -> None:
        self._store = store
        self._queue = accepted
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._slots = asyncio.Semaphore(_IN_FLIGHT)
        # Commits in the order started (at most _IN_FLIGHT unfinished), with their batch sizes.
        self._committing: asyncio.Queue[tuple[int, asyncio.Task[list[CommitResult]]]] = asyncio.Queue()

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
            self._committing.put_nowait((len(batch), commit))

    async def _deliver_stage(self) -> None:
        while True:
            taken, commit = await self._committing.get()
            try:
                results = await commit
            except Exception:
                logger.exception("commit of %d messages failed; senders will resend", taken)
                results = []
            finally:
                self._slots.release()  # the next batch may start committing while this one is delivered
            logger.debug("committed %d messages", len(results))
            try:
                if results:
                    await self._on_committed(results)
            except Exception:
                logger.exception("delivery after commit failed; devices catch up through sync")
            finally:
                for _ in range(taken):  # the queue's join() waits for these
                    self._queue.task_done()
