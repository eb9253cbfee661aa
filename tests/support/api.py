"""A REST client for tests: sign up and log in real users over HTTP."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["PASSWORD", "ApiClient", "Login", "sign_in_questions"]

_counter = itertools.count()
PASSWORD = "correct horse 1"  # the test users' password


@dataclass(frozen=True)
class Login:
    """What ``POST /v1/auth/token`` returned for one device."""

    user_id: str
    device_id: str
    access_token: str
    refresh_token: str
    username: str
    password: str
    mqtt: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        """Bearer authorisation for this device."""
        return {"Authorization": f"Bearer {self.access_token}"}


class ApiClient:
    """``httpx.Client`` bound to one platform, with sign-up and login helpers."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    @staticmethod
    def unique_username(prefix: str = "user") -> str:
        """A username no other test uses."""
        return f"{prefix}{os.getpid()}_{next(_counter)}"

    def sign_up(
        self, username: str | None = None, password: str = PASSWORD, **extra: object
    ) -> dict[str, Any]:
        """Create a user; the response body."""
        body = {"username": username or self.unique_username(), "password": password} | extra
        response = self.http.post("/v1/users", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def login(self, username: str, password: str = PASSWORD, **extra: object) -> Login:
        """Log a (new, unless ``device_id`` given) device in."""
        response = self.http.post("/v1/auth/token", json={"username": username, "password": password} | extra)
        assert response.status_code == 200, response.text
        body = response.json()
        return Login(
            user_id=body["user_id"],
            device_id=body["device_id"],
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            username=username,
            password=password,
            mqtt=body["mqtt"],
        )

    def new_user(self, prefix: str = "user") -> Login:
        """Sign up a fresh user and log one device in."""
        username = self.unique_username(prefix)
        self.sign_up(username)
        return self.login(username)


def sign_in_questions(api: ApiClient) -> tuple[list[tuple[int, str]], list[bool]]:
    """(user id, device id) pairs a CONNECT's signed-in check must get right, and their answers.

    Three signed-in devices, another user's device, a signed-out one, an unknown one, and one
    asked twice at once (concurrent questions share a batch).
    """
    logins = [api.new_user() for _ in range(3)]
    ended = api.new_user()
    assert api.http.post("/v1/auth/logout", headers=ended.headers).status_code == 204
    users = [int(login.user_id) for login in logins]
    questions = [(user, login.device_id) for user, login in zip(users, logins, strict=True)]
    questions += [
        (users[1], logins[0].device_id),  # another user's device
        (int(ended.user_id), ended.device_id),  # signed out
        (users[0], "no-such-device"),
        (users[2], logins[2].device_id),  # asked twice at once
    ]
    return questions, [True, True, True, False, False, False, True]
