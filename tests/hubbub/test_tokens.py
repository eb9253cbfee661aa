from __future__ import annotations

import pytest

from hubbub.errors import InvalidToken
from hubbub.tokens import AccessClaims, TokenCodec

SECRET = "s" * 48


def test_access_tokens_round_trip() -> None:
    codec = TokenCodec(SECRET, access_ttl_s=60, clock_s=lambda: 1_000_000.0)
    assert codec.verify(codec.issue_access(5, "77")) == AccessClaims(user_id=5, device_id="77")


def test_expired_tokens_are_refused() -> None:
    now = [1_000_000.0]
    codec = TokenCodec(SECRET, access_ttl_s=60, clock_s=lambda: now[0])
    token = codec.issue_access(5, "77")
    now[0] += 120
    with pytest.raises(InvalidToken, match="expired"):
        codec.verify(token)


def test_tokens_signed_with_another_secret_are_refused() -> None:
    token = TokenCodec("o" * 48, access_ttl_s=60).issue_access(5, "77")
    with pytest.raises(InvalidToken):
        TokenCodec(SECRET, access_ttl_s=60).verify(token)


def test_service_tokens_name_their_service() -> None:
    codec = TokenCodec(SECRET, access_ttl_s=60)
    assert codec.verify(codec.issue_service("persister")).service == "persister"
