"""The push engine: takes jobs without ever blocking the caller, and pushes them to providers.

Shape, and why:

- **Intake** is a bounded queue; when it is full the *oldest* job is dropped (counted, warned
  about): under overload a fresh push matters more than a stale one, and the message pipeline
  upstream must never wait for push services.
- **Coalescing** (``coalesce``) folds bursts per (user, conversation).
- **Lanes**: each provider has its own bounded queue and its own workers, so a provider that
  hangs or fails fills only its own lane; every attempt is also bounded by ``send_timeout``.
  Other providers, and other users, never wait for it.
- **Retries** of ``retry_later`` outcomes sleep in their own named tasks (``RetryPolicy``:
  bounded attempts, capped exponential backoff with jitter, ``Retry-After`` honoured) and then
  rejoin their lane; a worker never sleeps.
- **At most once, none lost**: before the first attempt the ``DeliveryLog`` claims (message,
  token); the provider's final answer settles it (``deliveries`` explains the two phases). A
  message replayed after a restart skips what was settled, waits for a claim another notifier
  holds (asking again when it would go stale) and takes over a dead notifier's claim. Should the
  log fail, the push is sent anyway: every push of a conversation shares a collapse id, so a rare
  duplicate replaces the notification on the device rather than ringing twice, while a silent
  outage would not.
- **Batches owed**: a job's ``Outstanding`` (``jobs``) is told when each of its pushes is over,
  so the feed acks a batch of committed messages only once its pushes are done; retries are
  bounded, so a failing provider delays an ack by at most its retry budget, never forever, and
  the pipeline itself never waits for it.
- ``token_rejected`` hands the token to ``remove_token`` in a task of its own.

Time comes from the injected ``clock``/``sleep`` (timeouts included), so tests drive it.
All background work runs as named tasks in one ``TaskGroup`` under ``run()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any

from hubbub.stores import PushRecipient, PushToken
from notifier.coalesce import Coalescer
from notifier.deliveries import Claim, ClaimState, DeliveryLog
from notifier.jobs import PushJob
from notifier.lanes import Delivery, Lane
from notifier.metrics import PushMetrics
from notifier.payload import fit_notification, notification_body, notification_title
from notifier.providers.base import Notification, OutcomeKind, PushOutcome, PushProvider
from notifier.retry import RetryPolicy

__all__ = ["Clock", "Dispatcher", "RemoveToken", "Sleep"]

_logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
RemoveToken = Callable[[PushToken], Awaitable[None]]
"""Forget a token a provider rejected for good (the caller owns the token store)."""

_DROP_WARNING_INTERVAL = 10.0


class Dispatcher:
    """Pushes ``PushJob``s through their providers; run it with ``run()`` or ``running()``.

    ``providers`` are keyed by their ``name``, which tokens refer to in ``PushToken.provider``;
    tokens of a provider that is not configured go to ``default_provider`` (the log provider in
    the embedded mode), or are skipped with a warning when there is none.
    """

    def __init__(
        self,
        *,
        providers: Iterable[PushProvider],
        remove_token: RemoveToken,
        delivery_log: DeliveryLog,
        default_provider: PushProvider | None = None,
        metrics: PushMetrics | None = None,
        retry: RetryPolicy | None = None,
        queue_size: int = 10_000,
        provider_queue_size: int = 10_000,
        concurrency: int = 16,
        coalesce_window: float = 3.0,
        send_timeout: float = 15.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._lanes = {p.name: Lane(p, provider_queue_size) for p in providers}
        self._default: Lane | None = None
        if default_provider is not None:
            self._default = self._lanes.setdefault(
                default_provider.name, Lane(default_provider, provider_queue_size)
            )
        self._remove_token = remove_token
        self._log = delivery_log
        self.metrics = metrics if metrics is not None else PushMetrics()
        self._retry = retry or RetryPolicy()
        self._concurrency = concurrency
        self._send_timeout = send_timeout
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._jobs: asyncio.Queue[PushJob] = asyncio.Queue(queue_size)
        self._changed = asyncio.Event()
        self._coalescer = Coalescer(coalesce_window, self._push, clock, sleep, self._changed.set)
        self._busy = 0
        self._retry_ids = itertools.count()
        self._tasks: asyncio.TaskGroup | None = None
        self._drops = 0
        self._last_drop_warning: float | None = None

    # -- the caller's side ---------------------------------------------------------------

    async def enqueue(self, job: PushJob) -> None:
        """Queue ``job``; never waits (see ``enqueue_nowait``)."""
        self.enqueue_nowait(job)

    def enqueue_nowait(self, job: PushJob) -> None:
        """Queue ``job``; when the queue is full the oldest job is dropped to make room."""
        dropped = self._jobs.get_nowait() if self._jobs.full() else None
        job.add()
        self._jobs.put_nowait(job)
        if dropped is not None:
            self.metrics.dropped("intake")
            self._warn_dropped("intake", dropped.message.message_id)
            dropped.done()
        self._changed.set()

    async def run(self) -> None:
        """Run the intake, the coalescer and every provider's workers until cancelled."""
        if self._tasks is not None:
            raise RuntimeError("the dispatcher is running already")
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._intake(), name="push-intake")
                tasks.create_task(self._coalescer.run(), name="push-coalescer")
                for lane in self._lanes.values():
                    for index in range(self._concurrency):
                        tasks.create_task(self._work(lane), name=f"push-{lane.name}-{index}")
        finally:
            self._tasks = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Dispatcher]:
        """``run()`` in a task for the duration of the block, cancelled on the way out."""
        task = asyncio.create_task(self.run(), name="push-dispatcher")
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                raise RuntimeError("the push dispatcher failed") from task.exception()

    async def wait_idle(self, provider: str | None = None) -> None:
        """Wait until nothing is queued, in flight or due (pending windows and backoffs may remain).

        With ``provider``, wait for that provider's lane only.
        """
        while not self._idle(provider):
            self._changed.clear()
            await self._changed.wait()

    async def drain(self) -> None:
        """Take every queued job, push every pending burst now, and wait until idle (shutdown)."""
        await self.wait_idle()
        self._coalescer.flush_all()
        await self.wait_idle()

    def _idle(self, provider: str | None = None) -> bool:
        now = self._clock()
        if provider is not None:
            return self._lanes[provider].idle(now)
        return (
            self._jobs.empty()
            and self._busy == 0
            and not self._coalescer.has_due()
            and all(lane.idle(now) for lane in self._lanes.values())
        )

    def _warn_dropped(self, stage: str, message_id: int) -> None:
        self._drops += 1
        now = self._clock()
        if self._last_drop_warning is None or now - self._last_drop_warning >= _DROP_WARNING_INTERVAL:
            self._last_drop_warning = now
            _logger.warning(
                "push queue full, dropped the oldest: stage=%s message_id=%s dropped_so_far=%d",
                stage,
                message_id,
                self._drops,
            )

    # -- jobs to deliveries --------------------------------------------------------------

    async def _intake(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                for recipient in job.recipients:
                    if self._coalescer.offer(job, recipient):
                        self._push(job, recipient, 1)
                    else:
                        self.metrics.coalesced()
            except Exception:
                _logger.exception("push job failed: message_id=%s", job.message.message_id)
            finally:
                job.done()
                self._changed.set()

    def _push(self, job: PushJob, recipient: PushRecipient, count: int) -> None:
        """Fit and queue one push per token of ``recipient`` (a burst of ``count`` messages)."""
        message = job.message
        title = notification_title(job.sender_name, job.conversation_title)
        prefix, text = notification_body(message.text, count)
        data: dict[str, str | int] = {
            "conversation_id": str(message.conversation_id),
            "message_id": str(message.message_id),
            "seq": message.seq,
        }
        if count > 1:
            data["count"] = count
        seen: set[str] = set()
        for token in recipient.tokens:
            if token.token_id in seen:
                continue
            seen.add(token.token_id)
            lane = self._lanes.get(token.provider, self._default)
            if lane is None:
                _logger.warning(
                    "no push provider for token: provider=%s token_id=%s user_id=%d message_id=%d",
                    token.provider,
                    token.token_id,
                    recipient.user_id,
                    message.message_id,
                )
                continue
            notification = Notification(
                token=token,
                title=title,
                body=prefix + text,
                thread_id=str(message.conversation_id),
                badge=recipient.badge,
                data=data,
            )
            fitted = fit_notification(notification, lane.provider, keep=len(prefix))
            job.add()
            self._queue(lane, Delivery(fitted, message.message_id, recipient.user_id, 0, job.outstanding))

    def _queue(self, lane: Lane, delivery: Delivery) -> None:
        dropped = lane.put(delivery)
        if dropped is not None:
            self.metrics.dropped("provider")
            self._warn_dropped(f"provider:{lane.name}", dropped.message_id)
            dropped.done()
        self._changed.set()

    # -- deliveries ----------------------------------------------------------------------

    async def _work(self, lane: Lane) -> None:
        while True:
            delivery = await lane.queue.get()
            lane.in_flight += 1
            over = False  # a cancelled attempt (shutdown, a killed notifier) is not over: it is redelivered
            try:
                over = await self._attempt(lane, delivery)
            except Exception:
                over = True
                self.metrics.failed(lane.name)
                _logger.exception(
                    "push attempt failed unexpectedly: provider=%s message_id=%d token_id=%s",
                    lane.name,
                    delivery.message_id,
                    delivery.notification.token.token_id,
                )
            finally:
                lane.in_flight -= 1
                if over:
                    delivery.done()
                self._changed.set()

    async def _attempt(self, lane: Lane, delivery: Delivery) -> bool:
        """One attempt; True when the delivery is over, False when it comes back later."""
        if delivery.attempts == 0:
            claim = await self._claim(delivery)
            if claim.state is ClaimState.SETTLED:
                self.metrics.duplicate()
                _logger.debug(
                    "push skipped, sent before: message_id=%d token_id=%s",
                    delivery.message_id,
                    delivery.token_id,
                )
                return True
            if claim.state is ClaimState.BUSY:
                _logger.info(
                    "push held by another notifier, asking again: message_id=%d token_id=%s delay_s=%.3f",
                    delivery.message_id,
                    delivery.token_id,
                    claim.retry_in_s,
                )
                self._later(lane, delivery, claim.retry_in_s)
                return False
        else:
            await self._logged(self._log.refresh, delivery, "refreshing a push claim")
        delivery.attempts += 1
        outcome = await lane.send(delivery, self._send_timeout, self._sleep)
        delay = self._retry_delay(lane, delivery, outcome)
        if delay is None:  # the final answer: recorded first, to keep a crash's window small
            await self._logged(self._log.settle, delivery, "settling a push claim")
        self._settle(lane, delivery, outcome, delay)
        return delay is None

    async def _claim(self, delivery: Delivery) -> Claim:
        try:
            return await self._log.claim(delivery.message_id, delivery.token_id)
        except Exception:
            _logger.exception(
                "delivery log failed, pushing anyway: message_id=%d token_id=%s",
                delivery.message_id,
                delivery.token_id,
            )
            return Claim(ClaimState.WON)

    @staticmethod
    async def _logged(record: Callable[[int, str], Awaitable[None]], delivery: Delivery, what: str) -> None:
        try:
            await record(delivery.message_id, delivery.token_id)
        except Exception:
            _logger.exception(
                "%s failed: message_id=%d token_id=%s", what, delivery.message_id, delivery.token_id
            )

    def _retry_delay(self, lane: Lane, delivery: Delivery, outcome: PushOutcome) -> float | None:
        """Seconds until the next attempt, or ``None`` when this outcome is final."""
        if outcome.kind is not OutcomeKind.RETRY_LATER:
            return None
        delay = self._retry.delay(delivery.attempts, outcome.retry_after, self._jitter())
        if delay is not None and len(lane.retry_deadlines) >= lane.capacity:
            self.metrics.dropped("retry")
            return None
        return delay

    def _settle(self, lane: Lane, delivery: Delivery, outcome: PushOutcome, delay: float | None) -> None:
        token = delivery.notification.token
        ids = (lane.name, delivery.message_id, delivery.user_id, token.token_id, outcome.reason)
        if outcome.kind is OutcomeKind.DELIVERED:
            self.metrics.sent(lane.name)
            _logger.debug("pushed: provider=%s message_id=%d user_id=%d token_id=%s reason=%s", *ids)
        elif outcome.kind is OutcomeKind.TOKEN_REJECTED:
            self.metrics.removed(lane.name)
            _logger.info(
                "push token rejected, removing: provider=%s message_id=%d user_id=%d token_id=%s reason=%s",
                *ids,
            )
            self._spawn(self._remove(token), f"push-remove-{lane.name}-{token.token_id}")
        elif outcome.kind is OutcomeKind.RETRY_LATER:
            self._retry_or_give_up(lane, delivery, outcome, delay)
        else:
            self.metrics.failed(lane.name)
            _logger.warning("push failed: provider=%s message_id=%d user_id=%d token_id=%s reason=%s", *ids)

    def _retry_or_give_up(
        self, lane: Lane, delivery: Delivery, outcome: PushOutcome, delay: float | None
    ) -> None:
        token_id = delivery.token_id
        if delay is None:
            self.metrics.failed(lane.name)
            _logger.warning(
                "push given up: provider=%s message_id=%d token_id=%s attempts=%d reason=%s retry_after=%s",
                lane.name,
                delivery.message_id,
                token_id,
                delivery.attempts,
                outcome.reason,
                outcome.retry_after,
            )
            return
        self.metrics.retried(lane.name)
        _logger.info(
            "push will be retried: provider=%s message_id=%d token_id=%s attempts=%d reason=%s delay_s=%.3f",
            lane.name,
            delivery.message_id,
            token_id,
            delivery.attempts,
            outcome.reason,
            delay,
        )
        self._later(lane, delivery, delay)

    def _later(self, lane: Lane, delivery: Delivery, delay: float) -> None:
        """Queue ``delivery`` on its lane again after ``delay`` seconds."""
        key = next(self._retry_ids)
        lane.retry_deadlines[key] = self._clock() + delay
        self._spawn(
            self._retry_after(lane, delivery, key, delay),
            f"push-retry-{lane.name}-{delivery.message_id}-{delivery.token_id}",
            busy=False,
        )

    async def _retry_after(self, lane: Lane, delivery: Delivery, key: int, delay: float) -> None:
        try:
            await self._sleep(delay)
        finally:
            lane.retry_deadlines.pop(key, None)
        self._queue(lane, delivery)

    async def _remove(self, token: PushToken) -> None:
        try:
            await self._remove_token(token)
        except Exception:
            _logger.exception("removing a rejected push token failed: token_id=%s", token.token_id)
        finally:
            self._busy -= 1
            self._changed.set()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str, *, busy: bool = True) -> None:
        if self._tasks is None:
            raise RuntimeError("the dispatcher is not running")
        if busy:
            self._busy += 1  # counted now, so wait_idle cannot slip in before the task starts
        self._tasks.create_task(work, name=name)
