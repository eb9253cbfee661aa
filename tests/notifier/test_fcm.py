from __future__ import annotations

import pytest

from notifier.payload import fit_notification
from notifier.providers.base import OutcomeKind, PushToken
from notifier.providers.fcm import FcmProvider, ServiceAccount
from tests.notifier.clock import FakeClock
from tests.notifier.conftest import FCM_PROJECT, notification
from tests.notifier.http_services import FcmService, Reply, fcm_error


def token(value: str) -> PushToken:
    return PushToken(token_id=f"t-{value}", provider="fcm", value=value)


async def test_a_push_reaches_fcm_v1_with_a_service_account_token(
    fcm: FcmProvider, fcm_service: FcmService
) -> None:
    outcome = await fcm.send(notification(token("device-1"), "see you at 8"))

    assert outcome.kind is OutcomeKind.DELIVERED
    message = fcm_service.messages.get_nowait()
    assert message["token"] == "device-1"
    assert message["notification"] == {"title": "Ann", "body": "see you at 8"}
    assert message["data"] == {"conversation_id": "4200", "message_id": "987654321012345678", "seq": "17"}
    assert message["android"]["collapse_key"] == "4200"
    assert message["android"]["notification"]["tag"] == "4200"
    assert message["android"]["notification"]["notification_count"] == 3
    assert message["apns"]["payload"]["aps"] == {"badge": 3, "thread-id": "4200"}


async def test_the_access_token_is_cached_until_it_nears_expiry(
    fcm: FcmProvider, fcm_service: FcmService, clock: FakeClock
) -> None:
    for _ in range(3):
        assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED
    assert fcm_service.grants == 1

    clock.advance(3599 - 299)
    assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED
    assert fcm_service.grants == 2


async def test_a_revoked_access_token_is_replaced(fcm: FcmProvider, fcm_service: FcmService) -> None:
    assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED
    fcm_service.revoke_all()

    outcome = await fcm.send(notification(token("d")))
    assert outcome.kind is OutcomeKind.RETRY_LATER
    assert outcome.reason == "UNAUTHENTICATED"
    assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED
    assert fcm_service.grants == 2


@pytest.mark.parametrize(
    ("reply", "kind", "reason"),
    [
        (
            fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
            "token_rejected",
            "UNREGISTERED",
        ),
        (
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            ),
            "token_rejected",
            "INVALID_ARGUMENT",
        ),
        (
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.token'",
                "INVALID_ARGUMENT",
                "message.token",
            ),
            "token_rejected",
            "INVALID_ARGUMENT",
        ),
        (
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.ttl'",
                "INVALID_ARGUMENT",
                "message.android.ttl",
            ),
            "permanent_failure",
            "INVALID_ARGUMENT",
        ),
        (
            fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
            "token_rejected",
            "SENDER_ID_MISMATCH",
        ),
        (
            fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
            "retry_later",
            "UNAVAILABLE",
        ),
        (fcm_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL"), "retry_later", "INTERNAL"),
        (
            fcm_error(401, "UNAUTHENTICATED", "APNs auth key invalid", "THIRD_PARTY_AUTH_ERROR"),
            "permanent_failure",
            "THIRD_PARTY_AUTH_ERROR",
        ),
    ],
)
async def test_fcm_errors_are_sorted_into_outcomes(
    fcm: FcmProvider, fcm_service: FcmService, reply: Reply, kind: str, reason: str
) -> None:
    fcm_service.script["d"] = [reply]
    outcome = await fcm.send(notification(token("d")))
    assert outcome.kind is OutcomeKind(kind)
    assert outcome.reason == reason


async def test_quota_exceeded_is_retried_after_the_servers_delay(
    fcm: FcmProvider, fcm_service: FcmService
) -> None:
    error = fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED")
    fcm_service.script["d"] = [Reply(error.status, error.body, {"Retry-After": "42"})]

    outcome = await fcm.send(notification(token("d")))
    assert outcome.kind is OutcomeKind.RETRY_LATER
    assert outcome.reason == "QUOTA_EXCEEDED"
    assert outcome.retry_after == 42


async def test_a_503_with_retry_after_is_retried_later(fcm: FcmProvider, fcm_service: FcmService) -> None:
    error = fcm_error(503, "UNAVAILABLE", "", "UNAVAILABLE")
    fcm_service.script["d"] = [Reply(error.status, error.body, {"Retry-After": "7"})]
    outcome = await fcm.send(notification(token("d")))
    assert (outcome.kind, outcome.retry_after) == (OutcomeKind.RETRY_LATER, 7)


async def test_a_refused_grant_is_a_permanent_failure(fcm: FcmProvider, fcm_service: FcmService) -> None:
    fcm_service.token_script = [Reply(400, {"error": "invalid_grant"})]
    outcome = await fcm.send(notification(token("d")))
    assert outcome.kind is OutcomeKind.PERMANENT_FAILURE
    assert fcm_service.messages.empty()


async def test_an_unavailable_token_endpoint_is_retried_later(
    fcm: FcmProvider, fcm_service: FcmService
) -> None:
    fcm_service.token_script = [Reply(503, {"error": "backend"})]
    assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.RETRY_LATER
    assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED


async def test_the_token_uri_of_the_service_account_is_used(
    service_account: ServiceAccount, fcm_service: FcmService, clock: FakeClock
) -> None:
    elsewhere = ServiceAccount(
        project_id=FCM_PROJECT,
        client_email=service_account.client_email,
        private_key=service_account.private_key,
        token_uri="http://127.0.0.1:9/unused",
    )
    provider = FcmProvider(
        account=elsewhere, base_url=fcm_service.base_url, token_uri=fcm_service.token_uri, clock=clock
    )
    try:
        assert (await provider.send(notification(token("d")))).kind is OutcomeKind.DELIVERED
    finally:
        await provider.close()


async def test_a_long_multibyte_text_is_fitted_to_fcms_4k(fcm: FcmProvider, fcm_service: FcmService) -> None:
    fitted = fit_notification(notification(token("d"), "日本語のテキスト🎉" * 1000), fcm)
    assert len(fcm.render(fitted)) <= 4096
    assert (await fcm.send(fitted)).kind is OutcomeKind.DELIVERED
    assert fcm_service.messages.get_nowait()["notification"]["body"].endswith("…")


def test_a_service_account_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="private_key"):
        ServiceAccount.from_info({"project_id": "p", "client_email": "e"})
