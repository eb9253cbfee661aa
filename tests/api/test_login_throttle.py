"""The per-address login limit, on a platform of its own (other tests share one address)."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import ApiClient
from tests.support.platform import start_platform


def test_logins_are_rate_limited_per_client_address(tmp_path: Path) -> None:
    platform = start_platform(tmp_path, extra_env={"HUBBUB_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE": "3"})
    client = ApiClient(platform.http_url)
    try:
        statuses = [
            client.http.post(
                "/v1/auth/token", json={"username": f"someone{i}", "password": "guess"}
            ).status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
    finally:
        client.close()
        platform.stop()
