from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from hubbub.stores import PushToken
from notifier.payload import fit_notification
from notifier.providers.apns import ApnsProvider
from notifier.providers.base import OutcomeKind
from tests.notifier.apns_server import HANG, ApnsServer, Reply
from tests.notifier.clock import FakeClock
from tests.notifier.conftest import APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC, apns_token, notification


def token(name: str) -> PushToken:
    return PushToken(token_id=f"t-{name}", provider="apns", value=apns_token(name))


async def test_a_push_reaches_apns_over_http2_with_a_valid_provider_token(
    apns: ApnsProvider, apns_server: ApnsServer
) -> None:
    outcome = await apns.send(notification(token("ok"), "see you at 8"))

    assert outcome.kind is OutcomeKind.DELIVERED
    request = apns_server.requests.get_nowait()
    assert request.alpn == "h2"
    assert request.device_token == apns_token("ok")
    assert request.claims["iss"] == APNS_TEAM_ID
    assert request.headers["apns-topic"] == APNS_TOPIC
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-collapse-id"] == "4200"
    assert request.headers["apns-priority"] == "10"
    assert request.json() == {
        "aps": {
            "alert": {"title": "Ann", "body": "see you at 8"},
            "badge": 3,
            "thread-id": "4200",
            "sound": "default",
        },
        "conversation_id": "4200",
        "message_id": "987654321012345678",
        "seq": 17,
    }


async def test_pushes_share_one_connection_and_one_provider_token(
    apns: ApnsProvider, apns_server: ApnsServer
) -> None:
    for name in ("a", "b", "c"):
        assert (await apns.send(notification(token(name)))).kind is OutcomeKind.DELIVERED
    tokens = {apns_server.requests.get_nowait().headers["authorization"] for _ in range(3)}
    assert len(tokens) == 1
    assert apns_server.connections == 1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(410, "Unregistered"), OutcomeKind.TOKEN_REJECTED),
        (Reply(400, "BadDeviceToken"), OutcomeKind.TOKEN_REJECTED),
        (Reply(400, "DeviceTokenNotForTopic"), OutcomeKind.TOKEN_REJECTED),
        (Reply(429, "TooManyRequests"), OutcomeKind.RETRY_LATER),
        (Reply(500, "InternalServerError"), OutcomeKind.RETRY_LATER),
        (Reply(503, "ServiceUnavailable"), OutcomeKind.RETRY_LATER),
        (Reply(400, "BadExpirationDate"), OutcomeKind.PERMANENT_FAILURE),
        (Reply(413, "PayloadTooLarge"), OutcomeKind.PERMANENT_FAILURE),
    ],
)
async def test_apns_answers_are_sorted_into_outcomes(
    apns: ApnsProvider, apns_server: ApnsServer, reply: Reply, kind: OutcomeKind
) -> None:
    apns_server.script[apns_token("x")] = [reply]
    outcome = await apns.send(notification(token("x")))
    assert outcome.kind is kind
    assert outcome.reason == reply.reason
    assert outcome.status == reply.status


async def test_retry_after_from_apns_is_passed_on(apns: ApnsProvider, apns_server: ApnsServer) -> None:
    apns_server.script[apns_token("x")] = [Reply(503, "ServiceUnavailable", (("retry-after", "30"),))]
    outcome = await apns.send(notification(token("x")))
    assert outcome.kind is OutcomeKind.RETRY_LATER
    assert outcome.retry_after == 30


async def test_an_expired_provider_token_is_replaced(
    apns: ApnsProvider, apns_server: ApnsServer, clock: FakeClock
) -> None:
    assert (await apns.send(notification(token("a")))).kind is OutcomeKind.DELIVERED
    first = apns_server.requests.get_nowait().headers["authorization"]
    apns_server.script[apns_token("a")] = [Reply(403, "ExpiredProviderToken"), Reply()]

    assert (await apns.send(notification(token("a")))).kind is OutcomeKind.RETRY_LATER
    clock.advance(1)
    assert (await apns.send(notification(token("a")))).kind is OutcomeKind.DELIVERED
    apns_server.requests.get_nowait()
    assert apns_server.requests.get_nowait().headers["authorization"] != first


async def test_the_provider_token_is_renewed_before_apple_refuses_it(
    apns: ApnsProvider, apns_server: ApnsServer, clock: FakeClock
) -> None:
    assert (await apns.send(notification(token("a")))).kind is OutcomeKind.DELIVERED
    clock.advance(55 * 60)
    assert (await apns.send(notification(token("a")))).kind is OutcomeKind.DELIVERED
    issued = [apns_server.requests.get_nowait().claims["iat"] for _ in range(2)]
    assert issued[1] - issued[0] == 55 * 60


async def test_a_malformed_device_token_is_rejected_without_a_request(
    apns: ApnsProvider, apns_server: ApnsServer
) -> None:
    bad = PushToken(token_id="t-bad", provider="apns", value="../../3/device/x")
    outcome = await apns.send(notification(bad))
    assert outcome.kind is OutcomeKind.TOKEN_REJECTED
    assert apns_server.requests.empty()


async def test_a_fitted_payload_with_emoji_is_accepted_at_the_4k_limit(
    apns: ApnsProvider, apns_server: ApnsServer
) -> None:
    huge = notification(token("big"), "👨‍👩‍👧 héllo " * 2000)
    fitted = fit_notification(huge, apns)

    assert (await apns.send(fitted)).kind is OutcomeKind.DELIVERED
    request = apns_server.requests.get_nowait()
    assert 4000 < len(request.body) <= 4096
    assert request.json()["aps"]["alert"]["body"].endswith("…")


async def test_an_unfitted_oversized_payload_is_refused_before_sending(
    apns: ApnsProvider, apns_server: ApnsServer
) -> None:
    outcome = await apns.send(notification(token("big"), "x" * 5000))
    assert outcome.kind is OutcomeKind.PERMANENT_FAILURE
    assert outcome.reason == "payload_too_large"
    assert apns_server.requests.empty()


async def test_a_wrong_signing_key_is_a_permanent_failure(
    apns_server: ApnsServer, client_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    (tmp_path / "AuthKey_OTHER.p8").write_bytes(other)
    provider = ApnsProvider(
        key=tmp_path / "AuthKey_OTHER.p8",
        key_id=APNS_KEY_ID,
        team_id=APNS_TEAM_ID,
        topic=APNS_TOPIC,
        base_url=apns_server.url,
        verify=client_tls,
    )
    try:
        outcome = await provider.send(notification(token("a")))
    finally:
        await provider.close()
    assert outcome.kind is OutcomeKind.PERMANENT_FAILURE
    assert outcome.reason == "InvalidProviderToken"
    assert apns_server.requests.get_nowait().claims == {}


async def test_a_push_apns_never_answers_times_out_and_later_pushes_go_through(
    apns_server: ApnsServer, apns_p8: bytes, client_tls: ssl.SSLContext, clock: FakeClock
) -> None:
    """Apple has been seen leaving streams unanswered: the request times out.

    httpx then drops the connection whose read timed out; the next push goes out on a fresh one.
    """
    provider = ApnsProvider(
        key=apns_p8,
        key_id=APNS_KEY_ID,
        team_id=APNS_TEAM_ID,
        topic=APNS_TOPIC,
        base_url=apns_server.url,
        verify=client_tls,
        timeout=2.0,
        clock=clock,
    )
    apns_server.script[apns_token("stuck")] = HANG
    try:
        stuck = await provider.send(notification(token("stuck")))
        after = await provider.send(notification(token("fine")))
    finally:
        await provider.close()
    assert (stuck.kind, stuck.reason) == (OutcomeKind.RETRY_LATER, "timeout")
    assert after.kind is OutcomeKind.DELIVERED


async def test_an_unreachable_apns_is_retried_later(apns_p8: bytes, client_tls: ssl.SSLContext) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = ApnsProvider(
        key=apns_p8,
        key_id=APNS_KEY_ID,
        team_id=APNS_TEAM_ID,
        topic=APNS_TOPIC,
        base_url=f"https://127.0.0.1:{port}",
        verify=client_tls,
    )
    try:
        outcome = await provider.send(notification(token("a")))
    finally:
        await provider.close()
    assert outcome.kind is OutcomeKind.RETRY_LATER


def test_a_key_that_is_not_a_p8_is_refused() -> None:
    with pytest.raises(ValueError, match="PEM"):
        ApnsProvider(key=b"not a key", key_id="k", team_id="t", topic="x")
