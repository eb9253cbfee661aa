"""A provider's lane: its own bounded queue, its own in-flight count, its own timeouts.

Giving each provider a lane is what keeps one provider's trouble its own: a hanging APNs fills
the APNs lane and ties up the APNs workers, while FCM, Web Push and the webhook drain theirs.
Every attempt is bounded by a timeout measured on the injected clock, and whatever a provider
raises becomes a permanent failure here, so nothing a provider does can unwind the dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from notifier.jobs import Outstanding
from notifier.providers.base import Notification, PushOutcome, PushProvider

__all__ = ["Delivery", "Lane"]

_logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Delivery:
    """One push on its way: the fitted notification, how many attempts it has had, its batch."""

    notification: Notification
    message_id: int
    user_id: int
    attempts: int = 0
    outstanding: Outstanding | None = None

    def done(self) -> None:
        """This push is over (pushed, skipped, given up or dropped): its batch owes it no more."""
        if self.outstanding is not None:
            self.outstanding.done()

    @property
    def token_id(self) -> str:
        """The token's id, for logs."""
        return self.notification.token.token_id


class Lane:
    """The queue, workers' bookkeeping and retry timers of one provider."""

    def __init__(self, provider: PushProvider, capacity: int) -> None:
        self.provider = provider
        self.name = provider.name
        self.capacity = capacity
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(capacity)
        self.in_flight = 0
        self.retry_deadlines: dict[int, float] = {}
        self._abandoned: set[asyncio.Task[PushOutcome]] = set()

    def put(self, delivery: Delivery) -> Delivery | None:
        """Queue ``delivery``; when the lane is full, drop and return its oldest delivery."""
        dropped = self.queue.get_nowait() if self.queue.full() else None
        self.queue.put_nowait(delivery)
        return dropped

    def idle(self, now: float) -> bool:
        """Nothing queued, nothing in flight, no retry due."""
        return (
            self.queue.empty()
            and self.in_flight == 0
            and all(deadline > now for deadline in self.retry_deadlines.values())
        )

    async def send(
        self, delivery: Delivery, limit_s: float, sleep: Callable[[float], Awaitable[None]]
    ) -> PushOutcome:
        """One attempt; ``retry_later("timeout")`` if it takes longer than ``limit_s`` seconds."""
        send = asyncio.create_task(
            self._guarded(delivery.notification),
            name=f"push-send-{self.name}-{delivery.message_id}-{delivery.token_id}",
        )
        timer = asyncio.create_task(self._sleep(sleep, limit_s), name=f"push-timeout-{self.name}")
        try:
            await asyncio.wait({send, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            await asyncio.wait({timer})  # no sleeper outlives its attempt
            if not send.done():
                send.cancel()
                self._abandoned.add(send)  # keep a reference while it unwinds
                send.add_done_callback(self._abandoned.discard)
        if send.done() and not send.cancelled():
            return send.result()
        _logger.warning(
            "push timed out: provider=%s message_id=%d token_id=%s timeout_s=%s",
            self.name,
            delivery.message_id,
            delivery.token_id,
            limit_s,
        )
        return PushOutcome.retry_later("timeout")

    @staticmethod
    async def _sleep(sleep: Callable[[float], Awaitable[None]], seconds: float) -> None:
        await sleep(seconds)

    async def _guarded(self, notification: Notification) -> PushOutcome:
        try:
            return await self.provider.send(notification)
        except Exception:
            _logger.exception(
                "push provider raised: provider=%s message_id=%s token_id=%s",
                self.name,
                notification.message_id,
                notification.token.token_id,
            )
            return PushOutcome.permanent_failure("provider_error")
