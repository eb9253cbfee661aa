"""What the notifier reads: committed messages, in batches per shard, settled once pushed.

The persister of a conversation shard hands every commit result on; the notifier reads them as
batches and settles each batch only when every push it caused is over (pushed, or given up for
good). Two implementations of ``CommittedFeed``:

- in-process (``InProcessCommittedFeed``, one node): the persister's ``on_committed`` hands
  results over in memory, never waiting (a bounded queue, the oldest dropped with a warning when
  full: push must never slow the message pipeline). Settling is free; nothing survives the
  process, as before.
- NATS (``cluster.push_feed``): the persister publishes each result to JetStream
  ``hubbub.committed.<shard>``; the notifier holding the shard's lease reads it with a durable
  consumer, and settling acks. A notifier that dies before settling leaves the batch unacked, so
  the shard's next owner gets it again; the notifier's delivery log makes that redelivery skip
  what was pushed and push what was not.

``settle`` and ``retry`` never wait (the in-process path stays as fast as a function call); an
implementation that must talk to a server does so in a task of its own.

The codec (``encode_commit_result``/``decode_commit_result``) is the committed stream's wire
format, one JSON object per result, ids as decimal strings.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hubbub.envelope import CommitResult

__all__ = [
    "CommittedBatch",
    "CommittedFeed",
    "InProcessCommittedFeed",
]

logger = logging.getLogger(__name__)


class CommittedBatch(Protocol):
    """Commit results of one shard, to push and then settle exactly once."""

    @property
    def shard(self) -> int:
        """The conversation shard the results are of (0 in one process)."""
        ...

    @property
    def results(self) -> Sequence[CommitResult]:
        """The results in commit order (duplicates included: the reader skips them)."""
        ...

    def settle(self) -> None:
        """Every push the batch caused is over: forget it for good (never waits)."""
        ...

    def retry(self, delay_s: float) -> None:
        """The batch could not be planned (a store was down): deliver it again in ``delay_s``."""
        ...


class CommittedFeed(Protocol):
    """Where the notifier reads committed messages from."""

    async def next_batch(self) -> CommittedBatch:
        """The next batch (waits for one)."""
        ...


@dataclass(frozen=True, slots=True)
class _LocalBatch:
    results: tuple[CommitResult, ...]
    feed: InProcessCommittedFeed = field(repr=False)
    shard: int = 0

    def settle(self) -> None:
        """Nothing to acknowledge in memory."""

    def retry(self, delay_s: float) -> None:
        """Queue the batch again after ``delay_s`` seconds."""
        asyncio.get_running_loop().call_later(delay_s, self.feed.put, self)


class InProcessCommittedFeed:
    """Commit results handed over in memory, in order; at most ``capacity`` results queued."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._batches: deque[_LocalBatch] = deque()
        self._queued = 0
        self._ready = asyncio.Event()

    def committed(self, results: Sequence[CommitResult]) -> None:
        """Queue the results of one commit; never waits (drops the oldest batches when full)."""
        if results:
            self.put(_LocalBatch(tuple(results), self))

    def put(self, batch: _LocalBatch) -> None:
        """Queue ``batch`` (a retried one comes back here)."""
        self._batches.append(batch)
        self._queued += len(batch.results)
        while self._queued > self._capacity and len(self._batches) > 1:
            dropped = self._batches.popleft()
            self._queued -= len(dropped.results)
            logger.warning(
                "push feed full; dropped %d committed messages from message_id=%d",
                len(dropped.results),
                dropped.results[0].message.message_id,
            )
        self._ready.set()

    async def next_batch(self) -> CommittedBatch:
        """The oldest queued batch (waits for one)."""
        while not self._batches:
            self._ready.clear()
            await self._ready.wait()
        batch = self._batches.popleft()
        self._queued -= len(batch.results)
        return batch
