"""Login throttling per address and per (username, address), on platforms of their own."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import ApiClient
from tests.support.platform import start_platform


def test_logins_are_rate_limited_per_client_address_whatever_it_forwards(tmp_path: Path) -> None:
    """No proxy is trusted by default: a rotating X-Forwarded-For does not make new addresses."""
    platform = start_platform(tmp_path, extra_env={"HUBBUB_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE": "3"})
    client = ApiClient(platform.http_url)
    try:
        statuses = [
            client.http.post(
                "/v1/auth/token",
                json={"username": f"someone{i}", "password": "guess"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
    finally:
        client.close()
        platform.stop()


def test_a_guesser_cannot_lock_the_owner_out(tmp_path: Path) -> None:
    """Behind a trusted proxy: the guesser's address waits, the owner's does not."""
    platform = start_platform(tmp_path, extra_env={"HUBBUB_TRUSTED_PROXIES": "127.0.0.1"})
    client = ApiClient(platform.http_url)
    try:
        owner = client.new_user()
        guesser = {"X-Forwarded-For": "203.0.113.5"}
        statuses = [
            client.http.post(
                "/v1/auth/token", json={"username": owner.username, "password": "not it"}, headers=guesser
            ).status_code
            for _ in range(8)
        ]
        assert statuses[:6] == [401] * 6
        assert statuses[6:] == [429, 429]
        at_home = client.http.post(
            "/v1/auth/token",
            json={"username": owner.username, "password": owner.password},
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert at_home.status_code == 200
    finally:
        client.close()
        platform.stop()
