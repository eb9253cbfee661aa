from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

import notifier
from hubbub.stores import PushToken
from notifier.deliveries import DeliveryLog, SqlDeliveryLog
from notifier.dispatcher import Dispatcher
from notifier.jobs import PushJob
from notifier.providers.apns import ApnsProvider
from notifier.providers.fcm import FcmProvider
from notifier.providers.log import LogProvider
from notifier.providers.webhook import WebhookProvider
from tests.notifier.apns_server import HANG, ApnsServer, Reply
from tests.notifier.clock import FakeClock
from tests.notifier.conftest import Removed, apns_token
from tests.notifier.http_services import FcmService, WebhookReceiver, fcm_error
from tests.notifier.http_services import Reply as HttpReply
from tests.notifier.pushes import apple, hook, job, message, next_call, to, within
from tests.support.schema import migrate


@pytest.fixture
async def dispatcher(make: Callable[..., Dispatcher], webhook: WebhookProvider) -> AsyncIterator[Dispatcher]:
    running = make(webhook)
    async with running.running():
        yield running


async def test_every_token_of_every_recipient_gets_one_push(
    make: Callable[..., Dispatcher],
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    apns: ApnsProvider,
    apns_server: ApnsServer,
) -> None:
    dispatcher = make(webhook, apns)
    async with dispatcher.running():
        await dispatcher.enqueue(
            job(
                message(11, "dinner?"),
                to(1, hook("a"), apple("a"), hook("a"), badge=4),
                to(2, hook("b")),
                title="Flat",
            )
        )
        await within(dispatcher.wait_idle())

    calls = sorted(
        [webhook_receiver.calls.get_nowait().body for _ in range(2)], key=lambda b: b["token"]["value"]
    )
    assert webhook_receiver.calls.empty()
    assert calls[0]["notification"] == {
        "title": "Ann · Flat",
        "body": "dinner?",
        "thread_id": "4200",
        "badge": 4,
        "data": {"conversation_id": "4200", "message_id": "11", "seq": 11},
    }
    assert calls[1]["token"]["value"] == "b"
    assert apns_server.requests.get_nowait().json()["aps"]["alert"] == {
        "title": "Ann · Flat",
        "body": "dinner?",
    }
    assert dispatcher.metrics.value("sent", provider="webhook") == 2
    assert dispatcher.metrics.value("sent", provider="apns") == 1


async def test_a_burst_into_one_conversation_becomes_two_pushes(
    make: Callable[..., Dispatcher],
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    clock: FakeClock,
) -> None:
    dispatcher = make(webhook, coalesce_window=5.0)
    async with dispatcher.running():
        for n in range(1, 51):
            await dispatcher.enqueue(job(message(n, f"message {n}"), to(1, hook("a"), badge=n)))
        await dispatcher.enqueue(job(message(99, "elsewhere", conversation_id=77), to(1, hook("a"))))
        await within(dispatcher.wait_idle())

        first = await next_call(webhook_receiver)
        other = await next_call(webhook_receiver)
        assert webhook_receiver.calls.empty()
        assert (first.body["notification"]["body"], other.body["notification"]["body"]) == (
            "message 1",
            "elsewhere",
        )

        clock.advance(5.0)
        await within(dispatcher.wait_idle())
        summary = (await next_call(webhook_receiver)).body["notification"]
        assert summary["body"] == "50 new messages: message 50"
        assert summary["badge"] == 50
        assert summary["data"] == {"conversation_id": "4200", "message_id": "50", "seq": 50, "count": 50}

        clock.advance(5.0)  # the burst is over
        await within(dispatcher.wait_idle())
        assert webhook_receiver.calls.empty()
        await dispatcher.enqueue(job(message(51, "later"), to(1, hook("a"))))
        await within(dispatcher.wait_idle())
        assert (await next_call(webhook_receiver)).body["notification"]["body"] == "later"

    assert dispatcher.metrics.value("coalesced") == 49
    assert dispatcher.metrics.value("sent", provider="webhook") == 4


async def test_drain_flushes_pending_bursts(
    make: Callable[..., Dispatcher], webhook: WebhookProvider, webhook_receiver: WebhookReceiver
) -> None:
    dispatcher = make(webhook, coalesce_window=5.0)
    async with dispatcher.running():
        for n in (1, 2, 3):
            await dispatcher.enqueue(job(message(n, f"m{n}"), to(1, hook("a"))))
        await within(dispatcher.drain())
    bodies = [webhook_receiver.calls.get_nowait().body["notification"]["body"] for _ in range(2)]
    assert bodies == ["m1", "3 new messages: m3"]


async def test_transient_failures_are_retried_with_backoff_until_delivered(
    dispatcher: Dispatcher, webhook_receiver: WebhookReceiver, clock: FakeClock
) -> None:
    webhook_receiver.script["a"] = [HttpReply(503), HttpReply(503), HttpReply(200)]
    await dispatcher.enqueue(job(message(1), to(1, hook("a"))))

    await within(dispatcher.wait_idle())
    assert clock.pending() == [0.75]  # 1 s step, half fixed, half jitter (0.5)
    clock.advance(0.75)
    await within(dispatcher.wait_idle())
    assert clock.pending() == [1.5]
    clock.advance(1.5)
    await within(dispatcher.wait_idle())

    assert clock.pending() == []
    assert webhook_receiver.calls.qsize() == 3
    assert dispatcher.metrics.value("retried", provider="webhook") == 2
    assert dispatcher.metrics.value("sent", provider="webhook") == 1


async def test_retries_are_bounded(
    dispatcher: Dispatcher, webhook_receiver: WebhookReceiver, clock: FakeClock
) -> None:
    webhook_receiver.script["a"] = [HttpReply(503)]
    await dispatcher.enqueue(job(message(1), to(1, hook("a"))))
    delays = []
    await within(dispatcher.wait_idle())
    while clock.pending():
        (delay,) = clock.pending()
        delays.append(delay)
        clock.advance(delay)
        await within(dispatcher.wait_idle())

    assert delays == [0.75, 1.5, 3.0]
    assert webhook_receiver.calls.qsize() == 4
    assert dispatcher.metrics.value("failed", provider="webhook") == 1


async def test_retry_after_is_honoured_and_an_excessive_one_ends_retries(
    dispatcher: Dispatcher, webhook_receiver: WebhookReceiver, clock: FakeClock
) -> None:
    webhook_receiver.script["a"] = [HttpReply(429, headers={"Retry-After": "20"}), HttpReply(200)]
    webhook_receiver.script["b"] = [HttpReply(429, headers={"Retry-After": "3600"})]
    await dispatcher.enqueue(job(message(1), to(1, hook("a")), to(2, hook("b"))))
    await within(dispatcher.wait_idle())

    assert clock.pending() == [20.0]
    clock.advance(20.0)
    await within(dispatcher.wait_idle())
    assert dispatcher.metrics.value("sent", provider="webhook") == 1
    assert dispatcher.metrics.value("failed", provider="webhook") == 1


async def test_dead_tokens_are_handed_to_the_remove_callback(  # noqa: PLR0917 - fixtures
    make: Callable[..., Dispatcher],
    apns: ApnsProvider,
    apns_server: ApnsServer,
    fcm: FcmProvider,
    fcm_service: FcmService,
    removed: Removed,
) -> None:
    apns_server.script[apns_token("gone")] = [Reply(410, "Unregistered")]
    apns_server.script[apns_token("bad")] = [Reply(400, "BadDeviceToken")]
    fcm_service.script["stale"] = [fcm_error(404, "NOT_FOUND", "", "UNREGISTERED")]
    stale = PushToken(token_id="fcm-stale", provider="fcm", value="stale")
    live = PushToken(token_id="fcm-live", provider="fcm", value="live")
    dispatcher = make(apns, fcm)
    async with dispatcher.running():
        await dispatcher.enqueue(
            job(message(1), to(1, apple("gone"), apple("ok"), stale, live), to(2, apple("bad")))
        )
        await within(dispatcher.wait_idle())

    assert sorted(token.token_id for token in removed.tokens) == ["apns-bad", "apns-gone", "fcm-stale"]
    assert dispatcher.metrics.value("tokens_removed", provider="apns") == 2
    assert dispatcher.metrics.value("sent", provider="fcm") == 1


async def test_a_failing_remove_callback_does_not_stop_the_dispatcher(
    make: Callable[..., Dispatcher],
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(token: PushToken) -> None:
        raise RuntimeError(f"store down for {token.token_id}")

    webhook_receiver.script["a"] = [HttpReply(410)]
    dispatcher = make(webhook, remove_token=broken)
    async with dispatcher.running():
        await dispatcher.enqueue(job(message(1), to(1, hook("a"))))
        await within(dispatcher.wait_idle())
        await dispatcher.enqueue(job(message(2), to(1, hook("b"))))
        await within(dispatcher.wait_idle())
    assert dispatcher.metrics.value("sent", provider="webhook") == 1
    assert any("removing a rejected push token failed" in r.getMessage() for r in caplog.records)


async def test_a_hanging_provider_delays_neither_other_providers_nor_other_users(  # noqa: PLR0917 - fixtures
    make: Callable[..., Dispatcher],
    apns: ApnsProvider,
    apns_server: ApnsServer,
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    clock: FakeClock,
) -> None:
    apns_server.script[apns_token("stuck")] = HANG
    dispatcher = make(apns, webhook, concurrency=1)
    async with dispatcher.running():
        await dispatcher.enqueue(job(message(1), to(1, apple("stuck"), hook("a"))))
        await within(apns_server.requests.get())  # APNs holds the request and never answers
        assert (await next_call(webhook_receiver)).body["token"]["value"] == "a"

        await dispatcher.enqueue(job(message(2), to(2, apple("fine"), hook("b"))))
        assert (await next_call(webhook_receiver)).body["token"]["value"] == "b"
        await within(dispatcher.wait_idle("webhook"))  # the webhook lane is done, APNs is still stuck
        assert apns_server.requests.empty()  # queued behind the stuck one in APNs' own lane
        assert dispatcher.metrics.value("sent", provider="webhook") == 2

        clock.advance(15.0)  # the stuck attempt times out, and is retried later
        await within(apns_server.requests.get())
        await within(dispatcher.wait_idle())

    assert dispatcher.metrics.value("retried", provider="apns") == 1
    assert dispatcher.metrics.value("sent", provider="apns") == 1
    assert dispatcher.metrics.value("sent", provider="webhook") == 2


async def test_no_token_is_pushed_twice_for_a_message_across_a_restart(
    make: Callable[..., Dispatcher],
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'notifier.db'}"
    replayed = job(message(5, "once"), to(1, hook("a"), hook("b")))

    async def run_once(*jobs: PushJob) -> Dispatcher:
        engine = create_async_engine(url)
        try:
            await migrate(engine, notifier.MIGRATIONS)  # as every start-up does
            log: DeliveryLog = SqlDeliveryLog(engine)
            dispatcher = make(webhook, delivery_log=log)
            async with dispatcher.running():
                for each in jobs:
                    await dispatcher.enqueue(each)
                await within(dispatcher.wait_idle())
            return dispatcher
        finally:
            await engine.dispose()

    await run_once(replayed)
    assert webhook_receiver.calls.qsize() == 2

    restarted = await run_once(replayed, job(message(6, "new"), to(1, hook("a"))))
    assert webhook_receiver.calls.qsize() == 3
    assert restarted.metrics.value("duplicates") == 2
    bodies = [webhook_receiver.calls.get_nowait().body["notification"]["body"] for _ in range(3)]
    assert bodies.count("once") == 2


async def test_a_full_queue_drops_the_oldest_job_with_a_warning(
    make: Callable[..., Dispatcher],
    webhook: WebhookProvider,
    webhook_receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher = make(webhook, queue_size=2)
    for n in (1, 2, 3):
        dispatcher.enqueue_nowait(job(message(n, f"m{n}"), to(1, hook("a"))))
    assert dispatcher.metrics.value("dropped", stage="intake") == 1
    assert any(r.levelno == logging.WARNING and "message_id=1" in r.getMessage() for r in caplog.records)

    async with dispatcher.running():
        await within(dispatcher.wait_idle())
    bodies = sorted(webhook_receiver.calls.get_nowait().body["notification"]["body"] for _ in range(2))
    assert bodies == ["m2", "m3"]
    assert webhook_receiver.calls.empty()


async def test_tokens_of_an_unconfigured_provider_go_to_the_default(
    make: Callable[..., Dispatcher], webhook: WebhookProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="notifier")
    dispatcher = make(webhook, default_provider=LogProvider())
    async with dispatcher.running():
        await dispatcher.enqueue(job(message(8), to(1, PushToken("fcm-1", "fcm", "reg-token"))))
        await within(dispatcher.wait_idle())
    assert dispatcher.metrics.value("sent", provider="log") == 1
    assert any("token_id=fcm-1" in r.getMessage() for r in caplog.records)
