"""The persister: the single writer that commits accepted messages in batches.

Accepted messages arrive on a queue (the in-process hand-off from ingest); one
task drains it into batches — whatever queued up while the previous commit ran — so
commit cost is shared under load without adding latency when idle. After each commit the
results go to ``on_committed`` (fan-out, acks, push): only committed messages are ever
delivered. A failed commit is logged and dropped: nothing was acknowledged, so the
senders' outboxes resend, and the store's cmid uniqueness keeps that idempotent.
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

    async def run(self) -> None:
        """Commit batches until cancelled."""
        while True:
            batch = [await self._queue.get()]
            await self._commit(self._fill(batch))

    async def flush(self) -> None:
        """Commit everything queued now (at shutdown, once ingest has stopped)."""
        while not self._queue.empty():
            await self._commit(self._fill([]))

    def _fill(self, batch: list[AcceptedMessage]) -> list[AcceptedMessage]:
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _commit(self, batch: list[AcceptedMessage]) -> None:
        try:
            results = await self._store.commit(batch)
        except Exception:
            logger.exception("commit of %d messages failed; senders will resend", len(batch))
            return
        logger.debug("committed %d messages", len(results))
        try:
            await self._on_committed(results)
        except Exception:
            logger.exception("delivery after commit failed; devices catch up through sync")
