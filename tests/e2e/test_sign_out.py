"""Signing a device out ends its live MQTT connection and refuses its token at CONNECT.

Revocation, not token expiry, is what ends a connection (README, "Accounts and signing out"):
the access token below is still well within its lifetime, and the connection closes anyway.
"""

from __future__ import annotations

from tests.support.api import ApiClient, Login
from tests.support.mqtt import WAIT_S, Device
from tests.support.platform import Platform

NOT_AUTHORIZED = 135  # CONNACK 5, as paho reports it (its MQTT 5 reason code "Not authorized")


def _connected(platform: Platform, login: Login, transport: str = "tcp") -> Device:
    device = Device.for_login(platform, login, transport)
    assert device.connect() == 0
    return device


def test_logout_closes_the_devices_live_connection_and_refuses_it_again(
    platform: Platform, api: ApiClient
) -> None:
    phone = api.new_user()
    laptop = api.login(phone.username)
    phone_tcp, phone_ws = _connected(platform, phone), _connected(platform, phone, "websockets")
    laptop_tcp = _connected(platform, laptop)
    try:
        assert api.http.post("/v1/auth/logout", headers=phone.headers).status_code == 204
        assert phone_ws.disconnected.wait(WAIT_S)  # the WebSocket took over the client id
        again = Device.for_login(platform, phone)
        assert again.connect() == NOT_AUTHORIZED
        again.close()
        assert not laptop_tcp.disconnected.is_set()
    finally:
        for device in (phone_tcp, phone_ws, laptop_tcp):
            device.close()


def test_a_password_change_closes_every_other_device(platform: Platform, api: ApiClient) -> None:
    phone = api.new_user()
    laptop = api.login(phone.username)
    phone_device, laptop_device = _connected(platform, phone), _connected(platform, laptop)
    try:
        changed = api.http.patch(
            "/v1/users/me",
            headers=laptop.headers,
            json={"password": "a brand new secret", "current_password": laptop.password},
        )
        assert changed.status_code == 200
        assert phone_device.disconnected.wait(WAIT_S)
        assert Device.for_login(platform, phone).connect() == NOT_AUTHORIZED
        assert not laptop_device.disconnected.is_set()
    finally:
        phone_device.close()
        laptop_device.close()


def test_ending_a_device_from_the_list_closes_it(platform: Platform, api: ApiClient) -> None:
    phone = api.new_user()
    laptop = api.login(phone.username)
    phone_device = _connected(platform, phone)
    try:
        listed = api.http.get("/v1/devices", headers=laptop.headers).json()
        assert phone.device_id in {device["id"] for device in listed["devices"]}
        ended = api.http.delete(f"/v1/devices/{phone.device_id}", headers=laptop.headers)
        assert ended.status_code == 204
        assert phone_device.disconnected.wait(WAIT_S)
    finally:
        phone_device.close()
