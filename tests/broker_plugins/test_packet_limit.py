"""Packets above the byte limit are refused from their header, on TCP and WebSocket alike."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.support.api import ApiClient
from tests.support.mqtt import Device
from tests.support.platform import Platform
from tests.support.wire import connect_packet, remaining_length

MAX_CHARS = 100_000
LIMIT = MAX_CHARS * 12 + 4096  # config.settings: every legal message fits


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_the_largest_legal_message_fits_and_a_larger_packet_drops_the_connection(
    platform: Platform, api: ApiClient, transport: str
) -> None:
    login = api.new_user()
    device = Device.for_login(platform, login, transport)
    assert device.connect() == 0
    try:
        # 100,000 emoji, each escaped as a surrogate pair the way json.dumps does: 12 bytes a character.
        legal = b'{"cmid":"c1","text":"' + b"\\ud83c\\udf89" * MAX_CHARS + b'"}'
        device.publish("conv/1/send", legal)
        assert device.subscribe(f"user/{login.user_id}/inbox") == [1]  # still connected
        device.client.publish("conv/1/send", b"x" * (LIMIT + 1), qos=1)
        assert device.disconnected.wait(15)
    finally:
        device.close()


def test_an_oversized_header_is_refused_before_the_body_is_sent(platform: Platform, api: ApiClient) -> None:
    login = api.new_user()
    with socket.create_connection((platform.mqtt_host, platform.mqtt_port), timeout=10) as sock:
        sock.sendall(connect_packet(login.device_id, login.user_id, login.access_token))
        assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
        topic = b"conv/1/send"
        header = b"\x32" + remaining_length(256 * 1024 * 1024 - 1) + struct.pack("!H", len(topic)) + topic
        sock.sendall(header + b"\x00\x01")  # the rest of a 256 MB packet is never sent
        assert sock.recv(16) == b""  # the broker closed the connection without waiting for it
