"""The hand-off between ingest and the persister: an accepted-message log, read as fenced batches.

Ingest writes to an ``AcceptedLog``; the persister reads an ``AcceptedSource``. One node passes
messages in memory (``persister.local_log``: a bounded queue, the same speed as before); a
cluster passes them through JetStream (``cluster.accepted``, ``cluster.intake``), where the
device is acknowledged only once the stream holds its message, and each conversation shard is
read by the one persister holding its lease.

What differs between the two, and what the persister does about it:

- ``offer`` returns ``None`` when the message was taken at once (in memory, with room), or an
  awaitable that finishes once it is held (room in the queue; JetStream's publish ack). It
  raises ``Unavailable`` (from the awaitable) when the log cannot take it now: nothing was
  accepted, the sender resends.
- A batch carries the ``Fence`` under which it may be committed (``None`` in one process), and
  is settled exactly once: ``done`` after it was committed and its results handed on, ``retry``
  after a commit that failed, ``fenced_out`` when the store refused the fence.
- ``redelivers``: whether a batch settled with ``retry`` comes back by itself. In memory it does
  not (the senders are told ``unavailable`` and resend); in JetStream it does (the message is
  durable and its device was already acknowledged, so nobody is told anything).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

from hubbub.envelope import AcceptedMessage, CommitResult
from hubbub.stores import Fence

__all__ = ["AcceptedBatch", "AcceptedLog", "AcceptedSource"]


class AcceptedLog(Protocol):
    """Where ingest puts what it accepted (the write side of the hand-off)."""

    def offer(self, message: AcceptedMessage, *, reply: bool = False) -> Awaitable[None] | None:
        """Hand ``message`` to the persisters: ``None`` when taken at once, else wait for the awaitable.

        ``reply``: the commit result must come back to this process (a REST submit made here
        whose persister may run elsewhere). The awaitable raises ``Unavailable`` when the log
        cannot hold the message now.
        """
        ...


class AcceptedBatch(Protocol):
    """Accepted messages to commit together, in order, and how to settle them once."""

    @property
    def messages(self) -> Sequence[AcceptedMessage]:
        """The messages in the order they were accepted (per conversation)."""
        ...

    @property
    def fence(self) -> Fence | None:
        """The fence to commit under (every message is of ``fence.shard``), ``None`` for one node."""
        ...

    @property
    def redelivers(self) -> bool:
        """Whether a batch settled with ``retry`` is delivered again by the source itself."""
        ...

    async def done(self, results: Sequence[CommitResult]) -> None:
        """Committed and handed on: answer whoever waits elsewhere, forget the batch for good."""
        ...

    async def retry(self, delay_ms: int) -> None:
        """Not committed: deliver it again in ``delay_ms`` (when ``redelivers``), else drop it."""
        ...

    async def fenced_out(self) -> None:
        """The store refused the fence: a newer owner holds the shard; stop reading it here."""
        ...


class AcceptedSource(Protocol):
    """What the persister reads (the read side of the hand-off)."""

    async def next_batch(self, max_messages: int) -> AcceptedBatch:
        """The next batch of at most ``max_messages`` (waits for at least one message)."""
        ...

    async def settled(self) -> None:
        """Wait until everything offered so far here has been handed out and settled (shutdown)."""
        ...
