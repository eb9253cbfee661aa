"""The accepted-message hand-off of one node: a bounded in-memory queue.

``hubbub up`` (no NATS) passes accepted messages from ingest to the persister in memory, as it
always did: ``offer`` is a plain append while there is room (no coroutine on the hot path)
and waits for room otherwise, which slows the senders down instead of growing memory. Batches
are whatever queued up meanwhile, up to the persister's batch size, with no fence (one node has
one persister). Nothing is redelivered: a batch that failed to commit is dropped, and the
persister tells its senders to resend.

Why not ``asyncio.Queue``: it counts, wakes and settles (``task_done``) one item at a time, which
was about 1.5 µs of the platform's CPU per chat message (``put_nowait``, ``get_nowait`` and
``task_done`` each check and wake waiters). ``AcceptedQueue`` takes a batch in one call and
settles it in one call; putting a message is an append and a counter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.stores import Fence

__all__ = ["AcceptedQueue", "LocalAcceptedLog", "LocalBatch"]


class AcceptedQueue:
    """A bounded FIFO of accepted messages, taken and settled a batch at a time.

    ``get``/``get_nowait``/``empty``/``full``/``qsize`` behave as ``asyncio.Queue``'s; ``take``
    hands out up to n messages at once, ``settle`` marks n taken messages done, and ``join``
    waits until every message put was settled.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("an accepted queue holds at least one message")
        self.maxsize = maxsize
        self._items: deque[AcceptedMessage] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._unsettled = 0  # put and not yet settled
        self._all_settled = asyncio.Event()
        self._all_settled.set()

    def qsize(self) -> int:
        """Messages waiting to be taken."""
        return len(self._items)

    def empty(self) -> bool:
        """No message waits to be taken."""
        return not self._items

    def full(self) -> bool:
        """``maxsize`` messages wait: ``put_nowait`` would raise."""
        return len(self._items) >= self.maxsize

    def put_nowait(self, message: AcceptedMessage) -> None:
        """Queue ``message``; ``asyncio.QueueFull`` if there is no room."""
        if len(self._items) >= self.maxsize:
            raise asyncio.QueueFull
        self._items.append(message)
        if not self._unsettled:
            self._all_settled.clear()
        self._unsettled += 1
        if self._getters:
            _wake_first(self._getters)

    async def put(self, message: AcceptedMessage) -> None:
        """Queue ``message`` once there is room."""
        while len(self._items) >= self.maxsize:
            await self._wait(self._putters, lambda: not self.full())
        self.put_nowait(message)

    def get_nowait(self) -> AcceptedMessage:
        """The oldest message; ``asyncio.QueueEmpty`` if there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        message = self._items.popleft()
        if self._putters:
            _wake_first(self._putters)
        return message

    async def get(self) -> AcceptedMessage:
        """The oldest message, once there is one."""
        while not self._items:
            await self._wait(self._getters, lambda: bool(self._items))
        return self.get_nowait()

    def take(self, most: int) -> list[AcceptedMessage]:
        """Up to ``most`` of the oldest messages (maybe none), without waiting."""
        items = self._items
        taken = [items.popleft() for _ in range(min(most, len(items)))]
        for _ in range(min(len(taken), len(self._putters))):
            _wake_first(self._putters)
        return taken

    def settle(self, count: int) -> None:
        """``count`` taken messages are done with (what ``join`` waits for)."""
        self._unsettled -= count
        if self._unsettled <= 0:
            self._unsettled = 0
            self._all_settled.set()

    async def join(self) -> None:
        """Wait until every message put so far was settled."""
        await self._all_settled.wait()

    @staticmethod
    async def _wait(waiters: deque[asyncio.Future[None]], ready: Callable[[], bool]) -> None:
        """Wait in ``waiters`` until woken; one cancelled after its wake-up passes the wake-up on."""
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            waiter.cancel()
            if waiter in waiters:
                waiters.remove(waiter)
            elif ready():
                _wake_first(waiters)
            raise


def _wake_first(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


@dataclass
class LocalBatch:
    """Messages taken from the queue together; settling marks them done in the queue."""

    messages: list[AcceptedMessage]
    _queue: AcceptedQueue = field(repr=False)
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
        if not self._settled:
            self._settled = True
            self._queue.settle(len(self.messages))  # what ``settled`` (the queue's join) waits for


class LocalAcceptedLog:
    """``AcceptedLog`` and ``AcceptedSource`` over one bounded ``AcceptedQueue``."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.queue = AcceptedQueue(maxsize)

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
        batch += queue.take(max_messages - 1)
        return LocalBatch(batch, queue)

    async def settled(self) -> None:
        """Every message offered so far was taken and its batch settled."""
        await self.queue.join()
