"""Verifying a token: PyJWT's checks for our HS256 tokens, and verified tokens remembered safely.

Tokens are made with PyJWT (as the API signs them), so what the broker accepts or refuses
here is checked against the library's own encoding.
"""

from __future__ import annotations

import base64

import jwt
import pytest

from hubbub.errors import InvalidToken
from hubbub.tokens import AccessClaims, TokenCodec

SECRET = "s" * 48
NOW = 1_000_000


def _claims(**changes: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "sub": "5",
        "did": "77",
        "typ": "access",
        "iss": "hubbub",
        "aud": "hubbub",
        "iat": NOW,
        "exp": NOW + 60,
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _codec(now: list[float] | None = None) -> TokenCodec:
    clock = now or [float(NOW)]
    return TokenCodec(SECRET, access_ttl_s=60, clock_s=lambda: clock[0])


def test_a_token_signed_by_pyjwt_is_accepted_with_an_audience_list() -> None:
    token = jwt.encode(_claims(aud=["other", "hubbub"]), SECRET, algorithm="HS256")
    assert _codec().verify(token) == AccessClaims(user_id=5, device_id="77")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (_claims(aud="other"), "Audience"),
        (_claims(aud=None), "Audience"),
        (_claims(iss="else"), "issuer"),
        (_claims(exp=None), '"exp"'),
        (_claims(iat=None), '"iat"'),
        (_claims(sub=None), '"sub"'),
        (_claims(typ=None), '"typ"'),
        (_claims(sub=5), "Subject"),
        (_claims(exp="soon"), "expired"),
        (_claims(nbf=NOW + 3600), "not yet valid"),
        (_claims(typ="refresh"), "not an access token"),
        (_claims(did=None), "not an access token"),
    ],
)
def test_claims_pyjwt_would_refuse_are_refused(claims: dict[str, object], reason: str) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match=reason):
        _codec().verify(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "not base64!.x.y",
        "ünïcode.x.y",
        jwt.encode(_claims(), "s" * 64, algorithm="HS512"),
        jwt.encode(_claims(), "o" * 48, algorithm="HS256"),
        jwt.encode(_claims(), "", algorithm="none"),
    ],
)
def test_what_is_not_our_hs256_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        _codec().verify(token)


def test_another_payload_under_a_valid_signature_is_refused_even_once_that_token_is_known() -> None:
    codec = _codec()
    token = jwt.encode(_claims(), SECRET, algorithm="HS256")
    assert codec.verify(token).user_id == 5
    header, _, signature = token.split(".")
    forged_payload = base64.urlsafe_b64encode(b'{"sub":"6"}').rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="Signature"):
        codec.verify(f"{header}.{forged_payload}.{signature}")


def test_a_remembered_token_still_expires() -> None:
    now = [float(NOW)]
    codec = _codec(now)
    token = codec.issue_access(5, "77")
    assert codec.verify(token).device_id == "77"
    now[0] += 120
    with pytest.raises(InvalidToken, match="expired"):
        codec.verify(token)


def test_a_refused_token_is_refused_every_time() -> None:
    codec = _codec()
    forged = jwt.encode(_claims(), "o" * 48, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(InvalidToken, match="Signature"):
            codec.verify(forged)


def test_a_header_is_trusted_only_once_a_token_with_it_checked_out() -> None:
    codec = _codec()
    # HMAC-SHA256 signatures under a header naming another algorithm: refused, before and after
    # a genuine token (whose header is then no longer decoded) was verified.
    mislabelled = jwt.encode(_claims(), SECRET, algorithm="HS256", headers={"alg": "HS384"})
    with pytest.raises(InvalidToken, match="not HS256"):
        codec.verify(mislabelled)
    assert codec.verify(jwt.encode(_claims(), SECRET, algorithm="HS256")).user_id == 5
    with pytest.raises(InvalidToken, match="not HS256"):
        codec.verify(jwt.encode(_claims(sub="6"), SECRET, algorithm="HS256", headers={"alg": "HS384"}))
    assert codec.verify(jwt.encode(_claims(sub="7"), SECRET, algorithm="HS256")).user_id == 7


# The signature is checked from two SHA-256 states keyed once (RFC 2104's inner and outer pads
# absorbed at start, their states copied per token), not through ``hmac.HMAC``. Whatever the
# secret's length (shorter than SHA-256's 64-byte block, exactly one block, longer and so hashed
# first), a token PyJWT signed with it passes (PyJWT signs with 32 bytes or more), and one signed
# with any other secret, or altered, does not.
PAD_SECRETS = ["k" * 32, "k" * 43, "k" * 63, "k" * 64, "k" * 65, "é" * 80]


def _codec_for(secret: str) -> TokenCodec:
    return TokenCodec(secret, access_ttl_s=60, clock_s=lambda: float(NOW))


@pytest.mark.parametrize("secret", PAD_SECRETS, ids=lambda secret: f"{len(secret.encode())}-bytes")
def test_a_token_signed_with_the_secret_passes_whatever_its_length(secret: str) -> None:
    token = jwt.encode(_claims(), secret, algorithm="HS256")
    assert _codec_for(secret).verify(token) == AccessClaims(user_id=5, device_id="77")


@pytest.mark.parametrize("secret", PAD_SECRETS, ids=lambda secret: f"{len(secret.encode())}-bytes")
def test_a_token_signed_with_another_secret_or_altered_fails_whatever_its_length(secret: str) -> None:
    other = jwt.encode(_claims(), secret + "x", algorithm="HS256")
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        _codec_for(secret).verify(other)
    header, payload, signature = jwt.encode(_claims(), secret, algorithm="HS256").split(".")
    altered = jwt.encode(_claims(sub="6"), secret, algorithm="HS256").split(".")[1]
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        _codec_for(secret).verify(f"{header}.{altered}.{signature}")
    assert payload != altered
