"""From committed messages to push jobs: who is offline, who muted, which tokens.

The persister's commit hands results here without waiting (a bounded queue, oldest
dropped with a warning when full): push must never slow the message pipeline. One task
then asks presence which members have no online device, asks the account store which of
those did not mute the conversation and have tokens, and enqueues a ``PushJob``.
Resends of stored messages (duplicates) are never pushed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence

from hubbub.envelope import CommitResult, CommittedMessage
from hubbub.stores import PushDirectory
from notifier.dispatcher import Dispatcher
from notifier.jobs import PushJob

__all__ = ["PushPlanner"]

logger = logging.getLogger(__name__)

Members = Callable[[int], Awaitable[frozenset[int] | None]]
Online = Callable[[Collection[int]], set[int]]


class PushPlanner:
    """Turns committed messages into ``PushJob``s for the dispatcher."""

    def __init__(
        self,
        directory: PushDirectory,
        dispatcher: Dispatcher,
        *,
        members: Members,
        online: Online,
        queue_size: int = 10_000,
    ) -> None:
        self._directory = directory
        self._dispatcher = dispatcher
        self._members = members
        self._online = online
        self._queue: asyncio.Queue[CommittedMessage] = asyncio.Queue(queue_size)

    def committed(self, results: Sequence[CommitResult]) -> None:
        """Queue new messages for planning; never waits."""
        for result in results:
            if result.duplicate:
                continue
            if self._queue.full():
                dropped = self._queue.get_nowait()
                logger.warning("push planning queue full; dropped message_id=%s", dropped.message_id)
            self._queue.put_nowait(result.message)

    async def run(self) -> None:
        """Plan pushes until cancelled; a failure costs one message's pushes, never the loop."""
        while True:
            message = await self._queue.get()
            try:
                await self._plan(message)
            except Exception:
                logger.exception("push planning failed for message_id=%s", message.message_id)

    async def _plan(self, message: CommittedMessage) -> None:
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
            )
        )
