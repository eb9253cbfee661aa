"""From committed messages to push jobs: who is offline, who muted, which tokens.

The planner reads a ``CommittedFeed`` (``hubbub.push_feed``): in one process the persister's
commit hands results to an in-process feed without waiting (``committed``), in a cluster the
feed is a JetStream consumer per owned shard. For each new message of a batch it asks presence
which members have no online device and the account store which of those did not mute the
conversation and have tokens, and enqueues a ``PushJob``. Resends of stored messages
(duplicates) are never pushed again.

Batches are planned one after another, but their pushes are not waited for: each batch's jobs
share an ``Outstanding``, and the batch is settled (acked) when the last push it caused is over.
So a slow or failing provider delays only the acks of the batches it holds (by at most its
bounded retries), never the planning of the next batch. A batch whose planning fails (the
account store is down) is handed back for redelivery after ``retry_delay_s``; what it pushed
before the failure is skipped then by the delivery log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence

from hubbub.envelope import CommitResult, CommittedMessage
from hubbub.push_feed import CommittedBatch, CommittedFeed, InProcessCommittedFeed
from hubbub.stores import PushDirectory
from notifier.dispatcher import Dispatcher
from notifier.jobs import Outstanding, PushJob

__all__ = ["Members", "Online", "PushPlanner"]

logger = logging.getLogger(__name__)

Members = Callable[[int], Awaitable[frozenset[int] | None]]
"""The members of a conversation (``None``: no such conversation)."""
Online = Callable[[Collection[int]], set[int]]
"""Which of these users have an online device now."""


class PushPlanner:
    """Turns committed messages into ``PushJob``s for the dispatcher, and settles their batches.

    Without a ``feed`` the planner reads its own in-process feed, fed by ``committed``.
    """

    def __init__(
        self,
        directory: PushDirectory,
        dispatcher: Dispatcher,
        *,
        members: Members,
        online: Online,
        feed: CommittedFeed | None = None,
        queue_size: int = 10_000,
        retry_delay_s: float = 5.0,
    ) -> None:
        self._directory = directory
        self._dispatcher = dispatcher
        self._members = members
        self._online = online
        self._local: InProcessCommittedFeed | None = None
        if feed is None:
            self._local = feed = InProcessCommittedFeed(queue_size)
        self._feed = feed
        self._retry_delay_s = retry_delay_s

    def committed(self, results: Sequence[CommitResult]) -> None:
        """Queue committed results on the in-process feed; never waits."""
        if self._local is None:
            raise RuntimeError("this planner reads another feed; publish committed results there")
        self._local.committed(results)

    async def run(self) -> None:
        """Plan batches until cancelled; a failed batch is retried, never the end of the loop."""
        while True:
            batch = await self._feed.next_batch()
            await self._plan_batch(batch)

    async def _plan_batch(self, batch: CommittedBatch) -> None:
        failed = False

        def settled() -> None:
            if not failed:  # a batch handed back for redelivery is not settled as well
                batch.settle()

        outstanding = Outstanding(settled)
        try:
            for result in batch.results:
                if not result.duplicate:
                    await self._plan(result.message, outstanding)
        except Exception:
            failed = True
            logger.exception(
                "push planning failed for a batch of shard %d; retrying it in %.1f s",
                batch.shard,
                self._retry_delay_s,
            )
            batch.retry(self._retry_delay_s)
        # Not on cancellation: a notifier stopped mid-planning leaves the batch unsettled, to be
        # delivered again (to the next owner of the shard, in a cluster).
        outstanding.release()

    async def _plan(self, message: CommittedMessage, outstanding: Outstanding) -> None:
        members = await self._members(message.conversation_id) or frozenset()
        candidates = members - {message.sender_id}
        offline = candidates - self._online(candidates)
        if not offline:
            return
        audience = await self._directory.audience(message, offline)
        if not audience.recipients:
            return
        await self._dispatcher.enqueue(
            PushJob(
                message=message,
                sender_name=audience.sender_name,
                recipients=audience.recipients,
                conversation_title=audience.conversation_title,
                outstanding=outstanding,
            )
        )
