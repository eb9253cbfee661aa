"""CONNECT authentication over TCP and WebSocket: every refusal the broker must make."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from hubbub.tokens import TokenCodec
from tests.support.api import ApiClient, Login
from tests.support.mqtt import Device
from tests.support.platform import Platform
from tests.support.wire import connect_packet

ACCEPTED = 0
NOT_AUTHORIZED = 135  # paho reports MQTT 3.1.1's CONNACK 5 as the MQTT 5 reason code 0x87
DeviceFactory = Callable[..., Device]


@pytest.fixture(params=["tcp", "websockets"])
def device(request: pytest.FixtureRequest, platform: Platform) -> Iterator[DeviceFactory]:
    """Builds devices of ``login`` on one transport and closes them after the test."""
    made: list[Device] = []

    def make(login: Login, **overrides: object) -> Device:
        built = Device.for_login(platform, login, request.param, **overrides)
        made.append(built)
        return built

    yield make
    for built in made:
        built.close()


def _platform_codec(platform: Platform, clock_s: Callable[[], float] = time.time) -> TokenCodec:
    secret = (platform.data_dir / "secret.key").read_text().strip()
    return TokenCodec(secret, access_ttl_s=60, clock_s=clock_s)


def _connect(device: DeviceFactory, login: Login, **overrides: object) -> int:
    return device(login, **overrides).connect()


def test_a_valid_token_connects(device: DeviceFactory, api: ApiClient) -> None:
    assert _connect(device, api.new_user()) == ACCEPTED


def test_a_forged_token_is_refused(device: DeviceFactory, api: ApiClient) -> None:
    login = api.new_user()
    forged = TokenCodec("x" * 48, access_ttl_s=60).issue_access(int(login.user_id), login.device_id)
    assert _connect(device, login, password=forged) == NOT_AUTHORIZED


def test_an_expired_token_is_refused(device: DeviceFactory, api: ApiClient, platform: Platform) -> None:
    login = api.new_user()
    an_hour_ago = _platform_codec(platform, clock_s=lambda: time.time() - 3600)
    expired = an_hour_ago.issue_access(int(login.user_id), login.device_id)
    assert _connect(device, login, password=expired) == NOT_AUTHORIZED


def test_another_users_token_is_refused(device: DeviceFactory, api: ApiClient) -> None:
    me, other = api.new_user(), api.new_user()
    assert _connect(device, me, password=other.access_token, client_id=other.device_id) == NOT_AUTHORIZED


def test_anonymous_connections_are_refused(device: DeviceFactory, api: ApiClient) -> None:
    login = api.new_user()
    assert device(login, username=None, password=None).connect() == NOT_AUTHORIZED


def test_a_client_id_that_is_not_the_tokens_device_is_refused(device: DeviceFactory, api: ApiClient) -> None:
    login = api.new_user()
    assert _connect(device, login, client_id="123456789") == NOT_AUTHORIZED


def test_a_hijack_of_another_devices_client_id_leaves_the_victim_connected(
    device: DeviceFactory, api: ApiClient
) -> None:
    victim, thief = api.new_user(), api.new_user()
    victim_device = device(victim)
    assert victim_device.connect() == ACCEPTED
    assert _connect(device, thief, client_id=victim.device_id) == NOT_AUTHORIZED
    # A round trip on the victim's connection proves it survived the attempt.
    assert victim_device.subscribe(f"user/{victim.user_id}/inbox") == [1]
    assert not victim_device.disconnected.is_set()


def test_a_device_may_not_set_a_will(device: DeviceFactory, api: ApiClient) -> None:
    login = api.new_user()
    built = device(login)
    built.client.will_set(f"presence/{login.user_id}", b'{"status": "offline"}', qos=1, retain=True)
    assert built.connect() == NOT_AUTHORIZED


def test_the_refusal_on_the_wire_is_connack_5(platform: Platform, api: ApiClient) -> None:
    login = api.new_user()
    with socket.create_connection((platform.mqtt_host, platform.mqtt_port), timeout=10) as sock:
        sock.sendall(connect_packet(login.device_id, login.user_id, "not a token"))
        assert sock.recv(4) == b"\x20\x02\x00\x05"
        assert sock.recv(4) == b""


def test_garbage_instead_of_connect_is_dropped_without_connack(platform: Platform) -> None:
    with socket.create_connection((platform.mqtt_host, platform.mqtt_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert sock.recv(16) == b""


def test_a_connection_that_never_sends_connect_is_closed(platform: Platform) -> None:
    # The test platform gives a new connection 2 s to send CONNECT (HUBBUB_CONNECT_TIMEOUT_S).
    with socket.create_connection((platform.mqtt_host, platform.mqtt_port), timeout=30) as sock:
        assert sock.recv(16) == b""
