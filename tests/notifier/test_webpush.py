from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hubbub.stores import PushToken
from notifier.payload import fit_notification
from notifier.providers.base import OutcomeKind
from notifier.providers.ece import MAX_PLAINTEXT, b64url_decode, b64url_encode, encrypt
from notifier.providers.vapid import VapidKey
from notifier.providers.webpush import WebPushProvider
from tests.notifier import rfc8291
from tests.notifier.clock import FakeClock
from tests.notifier.conftest import notification
from tests.notifier.http_services import Reply, WebPushService

# RFC 8291, section 5 and appendix A.
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_UA_PUBLIC = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3j"
    "l7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)


def token(subscription: str | Mapping[str, Any], name: str = "w") -> PushToken:
    return PushToken(token_id=f"t-{name}", provider="webpush", value=subscription)


def test_encryption_matches_the_rfc_8291_example() -> None:
    sender = ec.derive_private_key(int.from_bytes(b64url_decode(RFC_AS_PRIVATE), "big"), ec.SECP256R1())
    body = encrypt(
        RFC_PLAINTEXT,
        b64url_decode(RFC_UA_PUBLIC),
        b64url_decode(RFC_AUTH),
        sender_key=sender,
        salt=b64url_decode(RFC_SALT),
    )
    assert b64url_encode(body) == RFC_BODY


def test_the_independent_decryption_reads_the_rfc_8291_example() -> None:
    """The stand-in push service's decryption is itself pinned to the RFC, not to our encryption."""
    ua_private = ec.derive_private_key(int.from_bytes(b64url_decode(RFC_UA_PRIVATE), "big"), ec.SECP256R1())
    ua_public = ua_private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert b64url_encode(ua_public) == RFC_UA_PUBLIC
    assert rfc8291.decrypt(b64url_decode(RFC_BODY), ua_private, b64url_decode(RFC_AUTH)) == RFC_PLAINTEXT


def test_a_full_size_plaintext_is_one_4096_byte_record() -> None:
    ua_private = ec.generate_private_key(ec.SECP256R1())
    ua_public = ua_private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    plaintext = bytes(range(256)) * (MAX_PLAINTEXT // 256) + b"x" * (MAX_PLAINTEXT % 256)
    body = encrypt(plaintext, ua_public, b"0123456789abcdef")
    assert len(body) == 4096
    assert rfc8291.decrypt(body, ua_private, b"0123456789abcdef") == plaintext
    with pytest.raises(ValueError, match="one record"):
        encrypt(plaintext + b"x", ua_public, b"0123456789abcdef")


async def test_a_push_is_encrypted_to_the_subscription_and_signed_with_vapid(
    webpush: WebPushProvider, webpush_service: WebPushService, vapid: VapidKey, clock: FakeClock
) -> None:
    subscription = webpush_service.subscribe()
    outcome = await webpush.send(notification(token(subscription), "see you at 8"))

    assert outcome.kind is OutcomeKind.DELIVERED
    push = webpush_service.received.get_nowait()
    assert push.json() == {
        "title": "Ann",
        "body": "see you at 8",
        "tag": "4200",
        "badge": 3,
        "data": {"conversation_id": "4200", "message_id": "987654321012345678", "seq": 17},
    }
    assert push.claims["aud"] == webpush_service.base_url
    assert push.claims["sub"] == "mailto:ops@hubbub.test"
    assert clock() < push.claims["exp"] <= clock() + 24 * 3600
    assert jwt.get_unverified_header(push.headers["authorization"].split("t=")[1].split(",")[0]) == {
        "typ": "JWT",
        "alg": "ES256",
    }
    assert push.headers["topic"] == "4200"
    assert push.headers["urgency"] == "high"
    assert push.headers["ttl"] == "86400"
    assert webpush.vapid_public_key == vapid.public_key


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(404), OutcomeKind.TOKEN_REJECTED),
        (Reply(410), OutcomeKind.TOKEN_REJECTED),
        (Reply(429, headers={"Retry-After": "12"}), OutcomeKind.RETRY_LATER),
        (Reply(500), OutcomeKind.RETRY_LATER),
        (Reply(503), OutcomeKind.RETRY_LATER),
        (Reply(413), OutcomeKind.PERMANENT_FAILURE),
        (Reply(400), OutcomeKind.PERMANENT_FAILURE),
    ],
)
async def test_push_service_answers_are_sorted_into_outcomes(
    webpush: WebPushProvider, webpush_service: WebPushService, reply: Reply, kind: OutcomeKind
) -> None:
    subscription = webpush_service.subscribe()
    sid = subscription["endpoint"].rsplit("/", 1)[1]
    webpush_service.script[sid] = [reply]
    outcome = await webpush.send(notification(token(subscription)))
    assert outcome.kind is kind
    if reply.status == 429:
        assert outcome.retry_after == 12


async def test_an_unknown_subscription_is_rejected(
    webpush: WebPushProvider, webpush_service: WebPushService
) -> None:
    subscription = webpush_service.subscribe()
    subscription["endpoint"] = subscription["endpoint"].rsplit("/", 1)[0] + "/999"
    assert (await webpush.send(notification(token(subscription)))).kind is OutcomeKind.TOKEN_REJECTED


@pytest.mark.parametrize(
    "subscription",
    [
        "not-an-object",
        {"endpoint": "https://push.example/x"},
        {"endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}},
        {"endpoint": "https://push.example/x", "keys": {"p256dh": RFC_UA_PUBLIC, "auth": "AAAA"}},
        {"endpoint": "ftp://push.example/x", "keys": {"p256dh": RFC_UA_PUBLIC, "auth": RFC_AUTH}},
        {"endpoint": "https://push.example/x", "keys": {"p256dh": "BA" + "A" * 85, "auth": RFC_AUTH}},
    ],
)
async def test_a_malformed_subscription_is_rejected_without_a_request(
    webpush: WebPushProvider, webpush_service: WebPushService, subscription: str | Mapping[str, Any]
) -> None:
    assert (await webpush.send(notification(token(subscription)))).kind is OutcomeKind.TOKEN_REJECTED
    assert webpush_service.received.empty()


async def test_plain_http_endpoints_are_refused_by_default(
    vapid: VapidKey, webpush_service: WebPushService
) -> None:
    provider = WebPushProvider(vapid=vapid, subject="mailto:ops@hubbub.test")
    try:
        outcome = await provider.send(notification(token(webpush_service.subscribe())))
    finally:
        await provider.close()
    assert outcome.kind is OutcomeKind.TOKEN_REJECTED
    assert webpush_service.received.empty()


async def test_a_long_emoji_text_fits_one_4k_push(
    webpush: WebPushProvider, webpush_service: WebPushService
) -> None:
    fitted = fit_notification(notification(token(webpush_service.subscribe()), "🇫🇷🏳️‍🌈👍🏽" * 2000), webpush)
    assert len(webpush.render(fitted)) <= MAX_PLAINTEXT

    assert (await webpush.send(fitted)).kind is OutcomeKind.DELIVERED
    body = webpush_service.received.get_nowait().json()["body"]
    assert body.endswith("…")
    assert body.removesuffix("…").endswith(("🇫🇷", "🏳️‍🌈", "👍🏽"))


def test_a_vapid_key_is_created_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "vapid.pem"
    created = VapidKey.load_or_create(path)
    loaded = VapidKey.load_or_create(path)

    assert loaded.public_key == created.public_key
    assert len(b64url_decode(created.public_key)) == 65
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_vapid_key_loads_from_its_base64url_scalar() -> None:
    key = VapidKey.from_base64url(RFC_AS_PRIVATE)
    assert (
        key.public_key
        == "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
    )
    with pytest.raises(ValueError, match="32 bytes"):
        VapidKey.from_base64url("AAAA")


def test_the_vapid_subject_must_be_a_contact_url(vapid: VapidKey) -> None:
    with pytest.raises(ValueError, match="subject"):
        WebPushProvider(vapid=vapid, subject="ops@hubbub.test")


async def test_claims_the_vapid_signer_refuses_fail_the_push_without_a_request(
    vapid: VapidKey, webpush_service: WebPushService
) -> None:
    """``py_vapid`` accepts only a host name or IPv4 origin as ``aud``; an IPv6 one is refused."""
    provider = WebPushProvider(vapid=vapid, subject="mailto:ops@hubbub.test")
    subscription = webpush_service.subscribe() | {"endpoint": "https://[::1]:9/push/1"}
    try:
        outcome = await provider.send(notification(token(subscription)))
    finally:
        await provider.close()
    assert (outcome.kind, outcome.reason) == (OutcomeKind.PERMANENT_FAILURE, "VapidRefused")


async def test_a_redirect_from_the_push_service_is_not_followed(
    webpush: WebPushProvider, webpush_service: WebPushService
) -> None:
    """The endpoint is client-supplied: a 307 must not carry the push (or the notifier) elsewhere."""
    redirecting, elsewhere = webpush_service.subscribe(), webpush_service.subscribe()
    sid = redirecting["endpoint"].rsplit("/", 1)[1]
    webpush_service.script[sid] = [Reply(307, headers={"Location": elsewhere["endpoint"]})]

    outcome = await webpush.send(notification(token(redirecting)))
    assert (outcome.kind, outcome.status) == (OutcomeKind.PERMANENT_FAILURE, 307)
    assert webpush_service.received.get_nowait().subscription_id == sid
    assert webpush_service.received.empty()
