"""Coalescing: a burst into one conversation becomes one or two pushes per recipient, not fifty.

Per (user, conversation): the first message of a burst is pushed at once (a lone message is
never delayed); later messages within ``window`` seconds only update the burst, and when the
window closes one push carries the last text and how many messages the burst holds ("50 new
messages: ..."). While messages keep coming, that repeats at most once per window. Since every
push for a conversation has the same collapse id / tag, the device shows the latest one only.

A message held in a burst is owed to its batch (``PushJob.add``) until the window's push carries
it, or a later message of the burst takes its place (that one is then owed, and its push covers
both): so a batch is settled only once what it holds is pushed or covered by a pending push.

Deadlines are always "now + window", so they come in order: one deque and one timer task serve
every key, and a new burst never needs to wake the timer early.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hubbub.stores import PushRecipient
from notifier.jobs import PushJob

__all__ = ["Coalescer", "Flush"]

_logger = logging.getLogger(__name__)

Flush = Callable[[PushJob, PushRecipient, int], None]
"""Push ``job``'s message to ``recipient`` as a burst of ``count`` messages."""


@dataclass(slots=True)
class _Burst:
    count: int
    deadline: float
    pending: tuple[PushJob, PushRecipient] | None = None


class Coalescer:
    """Decides which messages are pushed now and flushes the rest when their window closes."""

    def __init__(
        self,
        window: float,
        flush: Flush,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._window = window
        self._flush = flush
        self._clock = clock
        self._sleep = sleep
        self._on_change = on_change
        self._bursts: dict[tuple[int, int], _Burst] = {}
        self._deadlines: deque[tuple[float, tuple[int, int]]] = deque()
        self._wake = asyncio.Event()

    def offer(self, job: PushJob, recipient: PushRecipient) -> bool:
        """True when the message should be pushed now; False when the burst absorbed it."""
        if self._window <= 0:
            return True
        key = (recipient.user_id, job.message.conversation_id)
        burst = self._bursts.get(key)
        if burst is None:
            deadline = self._clock() + self._window
            self._bursts[key] = _Burst(count=1, deadline=deadline)
            self._deadlines.append((deadline, key))
            self._wake.set()
            return True
        burst.count += 1
        job.add()
        if burst.pending is not None:
            burst.pending[0].done()  # covered by this later message's push
        burst.pending = (job, recipient)
        return False

    def has_due(self) -> bool:
        """True while a window has closed and its flush has not run yet."""
        return bool(self._deadlines) and self._deadlines[0][0] <= self._clock()

    def flush_all(self) -> None:
        """Push every pending burst now (graceful shutdown)."""
        for burst in self._bursts.values():
            if burst.pending is not None:
                job, recipient = burst.pending
                burst.pending = None
                self._flush_pending(job, recipient, burst.count)

    async def run(self) -> None:
        """Flush bursts as their windows close; runs until cancelled."""
        while True:
            if not self._deadlines:
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline, key = self._deadlines[0]
            delay = deadline - self._clock()
            if delay > 0:
                await self._sleep(delay)
                continue
            self._deadlines.popleft()
            try:
                self._close_window(key, deadline)
            except Exception:
                _logger.exception("flushing a burst failed: user_id=%d conversation_id=%d", *key)
            self._on_change()

    def _close_window(self, key: tuple[int, int], deadline: float) -> None:
        burst = self._bursts.get(key)
        if burst is None or burst.deadline != deadline:
            return
        if burst.pending is None:
            del self._bursts[key]  # the burst is over: the next message is pushed at once
            return
        job, recipient = burst.pending
        burst.pending = None
        burst.deadline = self._clock() + self._window
        self._deadlines.append((burst.deadline, key))
        self._flush_pending(job, recipient, burst.count)

    def _flush_pending(self, job: PushJob, recipient: PushRecipient, count: int) -> None:
        try:
            self._flush(job, recipient, count)  # the push's deliveries are owed from here
        finally:
            job.done()
