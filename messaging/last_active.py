"""The last-active writer: stores each user's ``last_active_at`` behind presence, one write at a time.

A mass (re)connect used to start one database write per user at once: thousands of
concurrent ORM sessions, ~20 KB of broker memory per connection at the peak, and connects
waiting on the database. Pending writes are one dict entry per user (a newer time
replaces an older one), drained by a single task.
"""

from __future__ import annotations

import asyncio
import logging

from hubbub.stores import Directory

__all__ = ["LastActiveWriter"]

logger = logging.getLogger(__name__)


class LastActiveWriter:
    """Coalesces ``record`` calls into sequential ``Directory.record_last_active`` writes."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._pending: dict[int, int] = {}
        self._writer: asyncio.Task[None] | None = None

    def record(self, user_id: int, at_ms: int) -> None:
        """Remember that ``user_id`` was active at ``at_ms``; written soon, never waited for."""
        self._pending[user_id] = max(at_ms, self._pending.get(user_id, at_ms))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="last-active")

    async def _drain(self) -> None:
        while self._pending:
            user_id, at_ms = self._pending.popitem()
            try:
                await self._directory.record_last_active(user_id, at_ms)
            except Exception:
                logger.exception("storing last activity of user %s failed", user_id)

    async def close(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for the pending writes: at shutdown."""
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer], timeout=timeout_s)
