"""A batch of committed messages is settled (acked) exactly when the pushes it caused are over.

Over means pushed, skipped as pushed before, given up for good (dead token, permanent failure,
retries exhausted), dropped under overload, or carried by a later push of the same burst; and a
claim another notifier holds is asked again until it is settled or goes stale and is taken over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from notifier.deliveries import MemoryDeliveryLog
from notifier.dispatcher import Dispatcher
from notifier.jobs import Outstanding
from notifier.providers.webhook import WebhookProvider
from tests.notifier.clock import FakeClock
from tests.notifier.http_services import Reply, WebhookReceiver
from tests.notifier.pushes import hook, job, message, next_call, to, within


class Batch:
    """An ``Outstanding`` whose settling the test can wait for and look at."""

    def __init__(self) -> None:
        self.settled = asyncio.Event()
        self.outstanding = Outstanding(self.settled.set)


async def test_a_batch_is_settled_once_retried_and_given_up_pushes_are_over(
    make: Callable[..., Dispatcher],
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    clock: FakeClock,
) -> None:
    webhook_receiver.script["slow"] = [Reply(503), Reply(200)]
    webhook_receiver.script["dead"] = [Reply(410)]
    webhook_receiver.script["broken"] = [Reply(400)]
    batch = Batch()
    dispatcher = make(webhook)
    async with dispatcher.running():
        for n, token in enumerate(("ok", "slow", "dead", "broken"), start=1):
            await dispatcher.enqueue(job(message(n), to(n, hook(token)), outstanding=batch.outstanding))
        batch.outstanding.release()
        await within(dispatcher.wait_idle())
        assert not batch.settled.is_set()  # "slow" waits for its retry
        clock.advance(0.75)
        await within(batch.settled.wait())
    assert webhook_receiver.calls.qsize() == 5


async def test_a_batch_held_by_a_burst_is_settled_when_the_burst_is_pushed(
    make: Callable[..., Dispatcher],
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    clock: FakeClock,
) -> None:
    first, second = Batch(), Batch()
    dispatcher = make(webhook, coalesce_window=5.0)
    async with dispatcher.running():
        await dispatcher.enqueue(job(message(1, "m1"), to(1, hook("a")), outstanding=first.outstanding))
        await dispatcher.enqueue(job(message(2, "m2"), to(1, hook("a")), outstanding=first.outstanding))
        first.outstanding.release()
        await dispatcher.enqueue(job(message(3, "m3"), to(1, hook("a")), outstanding=second.outstanding))
        second.outstanding.release()
        await within(dispatcher.wait_idle())
        assert (await next_call(webhook_receiver)).body["notification"]["body"] == "m1"
        await within(first.settled.wait())  # m2 is covered by m3's pending push, which is owed
        assert not second.settled.is_set()

        clock.advance(5.0)
        await within(second.settled.wait())
    assert (await next_call(webhook_receiver)).body["notification"]["body"] == "3 new messages: m3"


async def test_a_push_another_notifier_holds_is_taken_over_once_its_claim_is_stale(
    make: Callable[..., Dispatcher],
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    clock: FakeClock,
) -> None:
    log = MemoryDeliveryLog(stale_after_s=60.0, clock=clock)
    await log.claim(1, "hook-held")  # a notifier that died after claiming, before pushing
    await log.claim(1, "hook-pushed")
    await log.settle(1, "hook-pushed")  # ... and one that pushed before it died
    batch = Batch()
    dispatcher = make(webhook, delivery_log=log)
    async with dispatcher.running():
        recipients = (to(1, hook("held")), to(2, hook("pushed")), to(3, hook("new")))
        await dispatcher.enqueue(job(message(1), *recipients, outstanding=batch.outstanding))
        batch.outstanding.release()
        await within(dispatcher.wait_idle())
        assert (await next_call(webhook_receiver)).body["token"]["value"] == "new"
        assert clock.pending() == [60.0]
        assert not batch.settled.is_set()

        clock.advance(60.0)
        await within(batch.settled.wait())
    taken_over = await next_call(webhook_receiver)
    assert taken_over.body["token"]["value"] == "held"
    assert webhook_receiver.calls.empty()
    # Had the dead notifier's push reached the provider (the window left: killed between the
    # provider's answer and the settle record), this repeat would carry the same collapse id and
    # idempotency key, so the device replaces the notification and a gateway can drop the repeat.
    assert taken_over.body["notification"]["thread_id"] == "4200"
    assert taken_over.idempotency_key == "1:hook-held"
    assert dispatcher.metrics.value("duplicates") == 1


async def test_dropped_jobs_settle_their_batch(
    make: Callable[..., Dispatcher], webhook: WebhookProvider, webhook_receiver: WebhookReceiver
) -> None:
    batch = Batch()
    dispatcher = make(webhook, queue_size=1)
    for n in (1, 2):
        dispatcher.enqueue_nowait(job(message(n), to(1, hook("a")), outstanding=batch.outstanding))
    batch.outstanding.release()
    async with dispatcher.running():
        await within(batch.settled.wait())
    assert webhook_receiver.calls.qsize() == 1
