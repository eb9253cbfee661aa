"""Output of many connections flushed together, once the event loop's current turn ends.

A connection queues what it writes in a turn (a delivery, an ack, a SUBACK and the retained
messages behind it) and is marked here once; one callback then writes each marked connection's
queue in one ``transport.write``, instead of a write per packet.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["OUTPUT", "Flushable", "OutputBatch"]


class Flushable(Protocol):
    """A connection whose queued output can be written now."""

    def flush(self) -> None:
        """Write what is queued."""


class OutputBatch:
    """Handlers with queued output, flushed together once the event loop's current turn ends."""

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []

    def mark(self, handler: Flushable) -> None:
        """Flush ``handler`` at the end of this turn (the first mark of a turn schedules it)."""
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty.append(handler)

    def flush(self) -> None:
        """Write every marked connection's queue."""
        dirty, self._dirty = self._dirty, []
        for handler in dirty:
            handler.flush()


OUTPUT = OutputBatch()  # one per process: the broker runs one event loop
