"""The last-active writer: stores users' ``last_active_at`` behind presence, in batches, off the connect path.

A mass (re)connect used to start one database write per user at once: thousands of
concurrent ORM sessions, ~20 KB of broker memory per connection at the peak, and connects
waiting on the database; written one at a time, it was still a transaction per user. Pending
writes are one dict entry per user (a newer time replaces an older one), and one task writes
them: a batch of up to ``max_batch`` users per statement. The first record after a quiet spell
is written at once (a restart soon after loses nothing); the next batch waits ``interval_s``, or
until ``max_batch`` users are pending, so a storm of connects costs a few statements a second.
What is pending at shutdown is written by ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

from hubbub.stores import Directory

__all__ = ["LastActiveWriter"]

logger = logging.getLogger(__name__)

_INTERVAL_S = 0.25
_MAX_BATCH = 500


class LastActiveWriter:
    """Coalesces ``record`` calls into batched ``Directory.record_last_active`` writes."""

    def __init__(
        self, directory: Directory, *, interval_s: float = _INTERVAL_S, max_batch: int = _MAX_BATCH
    ) -> None:
        self._directory = directory
        self._interval_s = interval_s
        self._max_batch = max_batch
        self._pending: dict[int, int] = {}
        self._full = asyncio.Event()  # a batch is ready, or shutdown: write without waiting
        self._closing = False
        self._writer: asyncio.Task[None] | None = None

    def record(self, user_id: int, at_ms: int) -> None:
        """Remember that ``user_id`` was active at ``at_ms``; written soon, never waited for."""
        self._pending[user_id] = max(at_ms, self._pending.get(user_id, at_ms))
        if len(self._pending) >= self._max_batch:
            self._full.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="last-active")

    async def _write(self) -> None:
        while self._pending:
            batch = dict(itertools.islice(self._pending.items(), self._max_batch))
            for user_id in batch:
                del self._pending[user_id]
            try:
                await self._directory.record_last_active(batch)
            except Exception:
                logger.exception("storing the last activity of %d users failed", len(batch))
            if self._pending and not self._closing and len(self._pending) < self._max_batch:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._full.wait()

    async def close(self, timeout_s: float) -> None:
        """Write what is pending without waiting for the interval (up to ``timeout_s``): at shutdown."""
        self._closing = True
        self._full.set()
        if self._pending and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write(), name="last-active")
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer], timeout=timeout_s)
