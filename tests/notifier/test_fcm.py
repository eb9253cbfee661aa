from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from google.oauth2 import service_account

from hubbub.stores import PushToken
from notifier.payload import fit_notification
from notifier.providers.base import OutcomeKind
from notifier.providers.fcm import FCM_SCOPE, FcmProvider, load_service_account
from tests.notifier.conftest import notification
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


async def test_the_access_token_is_cached_while_it_is_fresh(
    fcm: FcmProvider, fcm_service: FcmService
) -> None:
    for _ in range(3):
        assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED
    assert fcm_service.grants == 1


async def test_an_access_token_near_its_expiry_is_renewed(fcm: FcmProvider, fcm_service: FcmService) -> None:
    """google-auth renews 3 min 45 s before expiry: a 2-minute token is renewed at its next use."""
    fcm_service.token_lifetime = 120
    for _ in range(2):
        assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED
    assert fcm_service.grants == 2


async def test_concurrent_pushes_share_one_refresh_off_the_event_loop(
    fcm: FcmProvider, fcm_service: FcmService
) -> None:
    """The stand-in answers on this event loop: a refresh that blocked the loop could never finish."""
    fcm_service.token_gate = asyncio.Event()
    first = asyncio.create_task(fcm.send(notification(token("a"))))
    await fcm_service.token_asked.wait()
    first.cancel()  # as the lane's timeout would: the refresh goes on, and is not started twice
    others = [asyncio.create_task(fcm.send(notification(token(name)))) for name in ("b", "c", "d")]
    fcm_service.token_gate.set()

    outcomes = await asyncio.gather(*others)
    assert {outcome.kind for outcome in outcomes} == {OutcomeKind.DELIVERED}
    assert (fcm_service.token_requests, fcm_service.grants) == (1, 1)
    with pytest.raises(asyncio.CancelledError):
        await first


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


async def test_a_token_endpoint_that_recovers_is_retried_by_google_auth(
    fcm: FcmProvider, fcm_service: FcmService
) -> None:
    fcm_service.token_script = [Reply(503, {"error": "backend"})]
    assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED
    assert fcm_service.token_requests == 2


@pytest.mark.parametrize(
    ("reply", "attempts"),
    [
        (Reply(503, {"error": "backend"}), 3),  # google-auth tries three times, then gives up
        (Reply(502), 1),  # google-auth does not retry it, but it says nothing about the account
    ],
)
async def test_an_unavailable_token_endpoint_is_retried_later(
    fcm: FcmProvider, fcm_service: FcmService, reply: Reply, attempts: int
) -> None:
    fcm_service.token_script = [reply] * attempts
    outcome = await fcm.send(notification(token("d")))
    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY_LATER, "access_token_unavailable")
    assert fcm_service.token_requests == attempts
    assert fcm_service.messages.empty()
    assert (await fcm.send(notification(token("d")))).kind is OutcomeKind.DELIVERED


async def test_an_unreachable_token_endpoint_is_retried_later(
    fcm_credentials: service_account.Credentials,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = FcmProvider(
        credentials=fcm_credentials.with_token_uri(f"http://127.0.0.1:{port}/token"),
        base_url=f"http://127.0.0.1:{port}",
    )
    try:
        outcome = await provider.send(notification(token("d")))
    finally:
        await provider.close()
    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY_LATER, "access_token_unavailable")


async def test_a_long_multibyte_text_is_fitted_to_fcms_4k(fcm: FcmProvider, fcm_service: FcmService) -> None:
    fitted = fit_notification(notification(token("d"), "日本語のテキスト🎉" * 1000), fcm)
    assert len(fcm.render(fitted)) <= 4096
    assert (await fcm.send(fitted)).kind is OutcomeKind.DELIVERED
    assert fcm_service.messages.get_nowait()["notification"]["body"].endswith("…")


def test_a_service_account_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="private_key"):
        load_service_account({"project_id": "p", "client_email": "e", "token_uri": "https://t"})
    with pytest.raises(ValueError, match="project_id"):
        load_service_account({"client_email": "e", "private_key": "k", "token_uri": "https://t"})


def test_a_service_account_file_is_loaded_with_the_fcm_scope(
    tmp_path: Path, fcm_key: rsa.RSAPrivateKey
) -> None:
    key = tmp_path / "service-account.json"
    pem = fcm_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    info = {"project_id": "p-1", "client_email": "e@p-1.test", "private_key": pem, "token_uri": "https://t"}
    key.write_bytes(orjson.dumps(info))
    credentials = load_service_account(key)
    assert (credentials.project_id, credentials.scopes) == ("p-1", [FCM_SCOPE])


def test_a_service_account_file_must_be_a_json_object(tmp_path: Path) -> None:
    key = tmp_path / "service-account.json"
    key.write_bytes(b"[]")
    with pytest.raises(ValueError, match="JSON object"):
        load_service_account(key)
    key.write_bytes(b"{not json")
    with pytest.raises(ValueError, match="not a service-account JSON"):
        load_service_account(key)
