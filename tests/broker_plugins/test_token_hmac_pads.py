"""A CONNECT's token signature, checked from two SHA-256 states keyed once (``hubbub/tokens.py``).

The broker computes HS256 as RFC 2104 does (the key's inner and outer pads absorbed once,
their states copied per token) rather than through ``hmac.HMAC``. Whatever the secret's
length (shorter than SHA-256's 64-byte block, exactly one block, longer and so hashed first),
a token PyJWT signed with it must pass (PyJWT signs with 32 bytes or more), and one signed
with any other secret or altered must not.
"""

from __future__ import annotations

import jwt
import pytest

from hubbub.errors import InvalidToken
from hubbub.tokens import AccessClaims, TokenCodec

NOW = 1_000_000
CLAIMS: dict[str, object] = {
    "sub": "5",
    "did": "77",
    "typ": "access",
    "iss": "hubbub",
    "aud": "hubbub",
    "iat": NOW,
    "exp": NOW + 60,
}
SECRETS = ["k" * 32, "k" * 43, "k" * 63, "k" * 64, "k" * 65, "é" * 80]


def _codec(secret: str) -> TokenCodec:
    return TokenCodec(secret, access_ttl_s=60, clock_s=lambda: float(NOW))


@pytest.mark.parametrize("secret", SECRETS, ids=lambda secret: f"{len(secret.encode())}-bytes")
def test_a_token_signed_with_the_secret_passes(secret: str) -> None:
    token = jwt.encode(CLAIMS, secret, algorithm="HS256")
    assert _codec(secret).verify(token) == AccessClaims(user_id=5, device_id="77")


@pytest.mark.parametrize("secret", SECRETS, ids=lambda secret: f"{len(secret.encode())}-bytes")
def test_a_token_signed_with_another_secret_or_altered_fails(secret: str) -> None:
    other = jwt.encode(CLAIMS, secret + "x", algorithm="HS256")
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        _codec(secret).verify(other)
    header, payload, signature = jwt.encode(CLAIMS, secret, algorithm="HS256").split(".")
    altered = jwt.encode({**CLAIMS, "sub": "6"}, secret, algorithm="HS256").split(".")[1]
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        _codec(secret).verify(f"{header}.{altered}.{signature}")
    assert payload != altered
