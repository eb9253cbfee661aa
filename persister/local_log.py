"""The accepted-message hand-off of one node: a bounded in-memory queue.

``hubbub up`` (no NATS) passes accepted messages from ingest to the persister in memory, as it
always did: ``offer`` is a ``put_nowait`` while there is room (no coroutine on the hot path)
and waits for room otherwise, which slows the senders down instead of growing memory. Batches
are whatever queued up meanwhile, up to the persister's batch size, with no fence (one node has
one persister). Nothing is redelivered: a batch that failed to commit is dropped, and the
persister tells its senders to resend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.stores import Fence

__all__ = ["LocalAcceptedLog", "LocalBatch"]


@dataclass
class LocalBatch:
    """Messages taken from the queue together; settling marks them done in the queue."""

    messages: list[AcceptedMessage]
    _queue: asyncio.Queue[AcceptedMessage] = field(repr=False)
    _settled: bool = field(default=False, repr=False)

    @property
    def fence(self) -> Fence | None:
        """One node has one persister: no fence."""
        return None

    @property
    def redelivers(self) -> bool:
        """A failed batch is gone: its senders are told to resend."""
        return False

    async def done(self, results: Sequence[CommitResult]) -> None:  # noqa: ARG002 - nobody waits elsewhere
        """Committed and handed on."""
        self._settle()

    async def retry(self, delay_ms: int) -> None:  # noqa: ARG002 - nothing comes back here
        """Dropped (the senders resend)."""
        self._settle()

    async def fenced_out(self) -> None:
        """Never happens without a fence; dropped like a failed batch."""
        self._settle()

    def _settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        for _ in self.messages:  # what ``settled`` (the queue's join) waits for
            self._queue.task_done()


class LocalAcceptedLog:
    """``AcceptedLog`` and ``AcceptedSource`` over one bounded ``asyncio.Queue``."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.queue: asyncio.Queue[AcceptedMessage] = asyncio.Queue(maxsize)

    def offer(self, message: AcceptedMessage, *, reply: bool = False) -> Awaitable[None] | None:  # noqa: ARG002
        """Queued at once when there is room (``None``); else the awaitable waits for room.

        ``reply`` needs nothing here: results reach this very process.
        """
        queue = self.queue
        if queue.full():
            return queue.put(message)
        queue.put_nowait(message)
        return None

    async def next_batch(self, max_messages: int) -> LocalBatch:
        """Whatever queued up meanwhile (at least one message, at most ``max_messages``)."""
        queue = self.queue
        batch = [await queue.get()]
        while len(batch) < max_messages and not queue.empty():
            batch.append(queue.get_nowait())
        return LocalBatch(batch, queue)

    async def settled(self) -> None:
        """Every message offered so far was taken and its batch settled."""
        await self.queue.join()
