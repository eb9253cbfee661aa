"""Ending a device: logout, a password change, the device list, a reused refresh token.

Every way of ending a device refuses its access and refresh tokens at once (not when they
expire), and the account store tells the broker the same at CONNECT.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from api import SqlDeviceSessions
from hubbub.sessions import DeviceEnded
from tests.support.api import ApiClient, Login
from tests.support.platform import Platform


def _me(api: ApiClient, login: Login) -> httpx.Response:
    return api.http.get("/v1/users/me", headers=login.headers)


def _refresh(api: ApiClient, refresh_token: str) -> httpx.Response:
    return api.http.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


def _signed_out(response: httpx.Response) -> bool:
    return response.status_code == 401 and response.json()["error"]["code"] == "signed_out"


def test_logout_refuses_that_devices_tokens_at_once(any_api: ApiClient) -> None:
    phone = any_api.new_user()
    laptop = any_api.login(phone.username)
    assert any_api.http.post("/v1/auth/logout", headers=phone.headers).status_code == 204
    assert _signed_out(_me(any_api, phone))
    assert _refresh(any_api, phone.refresh_token).status_code == 401
    assert _me(any_api, laptop).status_code == 200  # the other device is untouched
    again = any_api.http.post(
        "/v1/auth/token",
        json={"username": phone.username, "password": phone.password, "device_id": phone.device_id},
    )
    assert again.status_code == 401  # an ended device id never comes back
    assert again.json()["error"]["code"] == "unknown_device"


def test_a_password_change_ends_every_other_device(any_api: ApiClient) -> None:
    phone = any_api.new_user()
    laptop = any_api.login(phone.username)
    tablet = any_api.login(phone.username)
    changed = any_api.http.patch(
        "/v1/users/me",
        headers=laptop.headers,
        json={"password": "a brand new secret", "current_password": laptop.password},
    )
    assert changed.status_code == 200
    for ended in (phone, tablet):
        assert _signed_out(_me(any_api, ended))
        assert _refresh(any_api, ended.refresh_token).status_code == 401
    assert _me(any_api, laptop).status_code == 200
    assert _refresh(any_api, laptop.refresh_token).status_code == 200


def test_devices_are_listed_and_one_can_be_ended(any_api: ApiClient) -> None:
    phone = any_api.new_user()
    laptop = any_api.login(phone.username, device_name="laptop")
    listed = any_api.http.get("/v1/devices", headers=laptop.headers)
    assert listed.status_code == 200
    devices = {device["id"]: device for device in listed.json()["devices"]}
    assert set(devices) == {phone.device_id, laptop.device_id}
    assert devices[laptop.device_id]["current"] is True
    assert devices[laptop.device_id]["name"] == "laptop"
    assert devices[phone.device_id]["current"] is False

    ended = any_api.http.delete(f"/v1/devices/{phone.device_id}", headers=laptop.headers)
    assert ended.status_code == 204
    assert _signed_out(_me(any_api, phone))
    assert _refresh(any_api, phone.refresh_token).status_code == 401
    remaining = any_api.http.get("/v1/devices", headers=laptop.headers).json()["devices"]
    assert [device["id"] for device in remaining] == [laptop.device_id]
    again = any_api.http.delete(f"/v1/devices/{phone.device_id}", headers=laptop.headers)
    assert again.status_code == 404


def test_another_users_device_cannot_be_ended(any_api: ApiClient) -> None:
    victim = any_api.new_user()
    thief = any_api.new_user()
    response = any_api.http.delete(f"/v1/devices/{victim.device_id}", headers=thief.headers)
    assert response.status_code == 404
    assert _me(any_api, victim).status_code == 200


def test_reusing_a_rotated_out_refresh_token_ends_the_device(any_api: ApiClient) -> None:
    login = any_api.new_user()
    rotated = _refresh(any_api, login.refresh_token)
    assert rotated.status_code == 200
    newest = rotated.json()
    reused = _refresh(any_api, login.refresh_token)  # the thief, or the victim after the thief
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "refresh_token_reused"
    assert _refresh(any_api, newest["refresh_token"]).status_code == 401  # the whole family
    access = {"Authorization": f"Bearer {newest['access_token']}"}
    assert _signed_out(any_api.http.get("/v1/users/me", headers=access))
    assert _signed_out(_me(any_api, login))


def test_an_unknown_refresh_token_ends_nothing(any_api: ApiClient) -> None:
    login = any_api.new_user()
    assert _refresh(any_api, "made-up-token").status_code == 401
    assert _me(any_api, login).status_code == 200


@pytest.mark.parametrize("reason", ["logout", "password_changed", "ended", "refresh_token_reused"])
def test_the_device_ended_event_crosses_nodes_as_json(reason: str) -> None:
    event = DeviceEnded(123456789012345678, "987654321", reason)  # type: ignore[arg-type]
    assert DeviceEnded.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[]",
        b'{"user_id": 1, "device_id": "2", "reason": "logout"}',
        b'{"user_id": "1"}',
        b'{"user_id": "1", "device_id": "2", "reason": "bored"}',
    ],
)
def test_a_malformed_device_ended_event_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="device"):
        DeviceEnded.from_json(payload)


def test_the_store_tells_the_broker_whether_a_device_is_signed_in(platform: Platform) -> None:
    api = ApiClient(platform.http_url)
    try:
        login = api.new_user()
        other = api.new_user()

        async def ask() -> tuple[bool, bool]:
            engine = create_async_engine(f"sqlite+aiosqlite:///{platform.data_dir / 'hubbub.db'}")
            try:
                sessions = SqlDeviceSessions(async_sessionmaker(engine))
                mine = await sessions.is_signed_in(int(login.user_id), login.device_id)
                theirs = await sessions.is_signed_in(int(other.user_id), login.device_id)
                return mine, theirs
            finally:
                await engine.dispose()

        assert asyncio.run(ask()) == (True, False)
        assert api.http.post("/v1/auth/logout", headers=login.headers).status_code == 204
        assert asyncio.run(ask()) == (False, False)
    finally:
        api.close()
