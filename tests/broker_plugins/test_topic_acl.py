"""Topic ACL: a device subscribes to its own inbox only; refusals get SUBACK 0x80."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.api import ApiClient, Login
from tests.support.mqtt import Device
from tests.support.platform import Platform
from tests.support.wire import connect_packet

REFUSED = 0x80


@pytest.fixture
def alice(api: ApiClient) -> Login:
    return api.new_user("alice")


@pytest.fixture(params=["tcp", "websockets"])
def connected(request: pytest.FixtureRequest, platform: Platform, alice: Login) -> Iterator[Device]:
    device = Device.for_login(platform, alice, request.param)
    assert device.connect() == 0
    yield device
    device.close()


def test_own_inbox_and_presence_are_granted(connected: Device, alice: Login) -> None:
    assert connected.subscribe(f"user/{alice.user_id}/inbox", qos=1) == [1]
    assert connected.subscribe(f"presence/{alice.user_id}", qos=0) == [0]


@pytest.mark.parametrize(
    "topic",
    [
        "user/1/inbox",  # someone else's inbox
        "user/+/inbox",
        "conv/1/send",
        "conv/+/send",
        "#",
        "$hubbub/accepted",
        "$SYS/#",
        "anything/else",
    ],
)
def test_forbidden_subscriptions_get_0x80(connected: Device, topic: str) -> None:
    assert connected.subscribe(topic) == [REFUSED]
    # The refusal does not cost the connection.
    assert not connected.disconnected.is_set()


def test_a_new_connection_gets_no_retained_message_it_did_not_subscribe_to(
    platform: Platform, api: ApiClient, connected: Device, alice: Login
) -> None:
    # Alice's own presence is retained on the broker and she subscribes to it.
    assert connected.subscribe(f"presence/{alice.user_id}") == [1]
    assert connected.next_message().retain
    newcomer = api.new_user()
    with socket.create_connection((platform.mqtt_host, platform.mqtt_port), timeout=10) as sock:
        sock.sendall(connect_packet(newcomer.device_id, newcomer.user_id, newcomer.access_token))
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        sock.sendall(b"\xc0\x00")  # PINGREQ: the very next packet must be its PINGRESP
        assert sock.recv(2) == b"\xd0\x00"
