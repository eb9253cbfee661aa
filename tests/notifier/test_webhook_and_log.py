from __future__ import annotations

import logging

import pytest

from hubbub.stores import PushToken
from notifier.providers.base import OutcomeKind
from notifier.providers.log import LogProvider
from notifier.providers.webhook import WebhookProvider, sign
from tests.notifier.conftest import WEBHOOK_SECRET, notification
from tests.notifier.http_services import Reply, WebhookReceiver

TOKEN = PushToken(token_id="t-1", provider="webhook", value="gateway-token-1")


async def test_a_push_is_posted_as_signed_json(
    webhook: WebhookProvider, webhook_receiver: WebhookReceiver
) -> None:
    outcome = await webhook.send(notification(TOKEN, "see you at 8"))

    assert outcome.kind is OutcomeKind.DELIVERED
    call = webhook_receiver.calls.get_nowait()
    assert call.body == {
        "token": {"id": "t-1", "provider": "webhook", "value": "gateway-token-1"},
        "notification": {
            "title": "Ann",
            "body": "see you at 8",
            "thread_id": "4200",
            "badge": 3,
            "data": {"conversation_id": "4200", "message_id": "987654321012345678", "seq": 17},
        },
    }
    assert call.signature == sign(WEBHOOK_SECRET, webhook.render(notification(TOKEN, "see you at 8")))
    assert call.idempotency_key == "987654321012345678:t-1"  # one push, whichever attempt


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(200, {"rejected": ["gateway-token-1"]}), OutcomeKind.TOKEN_REJECTED),
        (Reply(410), OutcomeKind.TOKEN_REJECTED),
        (Reply(404), OutcomeKind.TOKEN_REJECTED),
        (Reply(429, headers={"Retry-After": "5"}), OutcomeKind.RETRY_LATER),
        (Reply(503), OutcomeKind.RETRY_LATER),
        (Reply(400), OutcomeKind.PERMANENT_FAILURE),
    ],
)
async def test_gateway_answers_are_sorted_into_outcomes(
    webhook: WebhookProvider, webhook_receiver: WebhookReceiver, reply: Reply, kind: OutcomeKind
) -> None:
    webhook_receiver.script["gateway-token-1"] = [reply]
    assert (await webhook.send(notification(TOKEN))).kind is kind


async def test_an_unsigned_request_is_refused_by_the_receiver(webhook_receiver: WebhookReceiver) -> None:
    provider = WebhookProvider(url=webhook_receiver.url)
    try:
        outcome = await provider.send(notification(TOKEN))
    finally:
        await provider.close()
    assert outcome.kind is OutcomeKind.PERMANENT_FAILURE
    assert outcome.status == 401


async def test_the_log_provider_logs_ids_but_no_text_or_token_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="notifier")
    outcome = await LogProvider().send(notification(TOKEN, "a private message", title="Secret Sender"))

    assert outcome.kind is OutcomeKind.DELIVERED
    (record,) = [r for r in caplog.records if r.levelno == logging.INFO]
    text = record.getMessage()
    assert "message_id=987654321012345678" in text
    assert "token_id=t-1" in text
    assert "private message" not in text
    assert "Secret Sender" not in text
    assert "gateway-token-1" not in text


def test_tokens_and_texts_stay_out_of_reprs() -> None:
    shown = repr(notification(TOKEN, "a private message", title="Secret Sender"))
    assert "gateway-token-1" not in shown
    assert "private message" not in shown
    assert "t-1" in shown
