"""MQTT 3.1.1 packets the broker must answer by closing the connection, on a real broker.

Each bad packet is sent by a service after a valid CONNECT (services may publish and
subscribe anywhere, so nothing but the packet's form can be the reason); the broker must
close that connection without a reply, and a bystander connected meanwhile keeps working.
"""

from __future__ import annotations

import socket
import struct
import uuid

import pytest

from hubbub.tokens import TokenCodec
from tests.broker_plugins.test_protocol_delivery import PUBLISH, RawClient
from tests.support.platform import Platform
from tests.support.wire import remaining_length

PACKET_ID = b"\x00\x07"


def _raw(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


BAD_PACKETS = {
    "NUL in a PUBLISH topic [MQTT-1.5.3-2]": _packet(0x32, _raw(b"strict/a\x00b") + PACKET_ID + b"x"),
    "NUL in a QoS 0 PUBLISH topic": _packet(0x30, _raw(b"\x00") + b"x"),
    "invalid UTF-8 in a PUBLISH topic [MQTT-1.5.3-1]": _packet(0x32, _raw(b"strict/\xff") + PACKET_ID),
    "a UTF-16 surrogate in a PUBLISH topic [MQTT-1.5.3-1]": _packet(0x30, _raw(b"a/\xed\xa0\x80")),
    "invalid UTF-8 in a SUBSCRIBE filter": _packet(0x82, PACKET_ID + _raw(b"a/\xff") + b"\x00"),
    "NUL in a SUBSCRIBE filter": _packet(0x82, PACKET_ID + _raw(b"a/\x00") + b"\x00"),
    "SUBSCRIBE with no filter [MQTT-3.8.3-3]": _packet(0x82, PACKET_ID),
    "SUBSCRIBE asking QoS 3 [MQTT-3.8.3-4]": _packet(0x82, PACKET_ID + _raw(b"strict/q") + b"\x03"),
    "SUBSCRIBE with reserved bits in its QoS byte": _packet(0x82, PACKET_ID + _raw(b"strict/q") + b"\x41"),
    "SUBSCRIBE with flags 0 [MQTT-3.8.1-1]": _packet(0x80, PACKET_ID + _raw(b"strict/q") + b"\x00"),
    "UNSUBSCRIBE with flags 0 [MQTT-3.10.1-1]": _packet(0xA0, PACKET_ID + _raw(b"strict/q")),
    "UNSUBSCRIBE with no filter [MQTT-3.10.3-2]": _packet(0xA2, PACKET_ID),
    "NUL in an UNSUBSCRIBE filter": _packet(0xA2, PACKET_ID + _raw(b"a\x00")),
    "PUBREL with flags 0 [MQTT-3.6.1-1]": _packet(0x60, PACKET_ID),
    "PUBACK with flags 2 [MQTT-2.2.2-2]": _packet(0x42, PACKET_ID),
    "PINGREQ with flags 1 [MQTT-2.2.2-2]": b"\xc1\x00",
}


def _closed_without_reply(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("packet", BAD_PACKETS.values(), ids=BAD_PACKETS.keys())
def test_a_malformed_packet_closes_only_its_connection(platform: Platform, packet: bytes) -> None:
    topic = f"strict/{uuid.uuid4().hex}"
    bystander = RawClient(platform, f"bystander-{uuid.uuid4().hex[:8]}")
    offender = RawClient(platform, f"offender-{uuid.uuid4().hex[:8]}")
    try:
        assert bystander.subscribe(topic, 1) == 1
        offender.sock.sendall(packet)
        assert _closed_without_reply(offender.sock)
        bystander.publish(topic, b"still here", 0)
        received = bystander.read()
        assert (received.kind, received.publish()[::2]) == (PUBLISH, (topic, b"still here"))
    finally:
        bystander.close()
        offender.close()


def _connect_with_will(platform: Platform, will_topic: bytes) -> socket.socket:
    secret = (platform.data_dir / "secret.key").read_text().strip()
    token = TokenCodec(secret, access_ttl_s=60).issue_service("prototest").encode()
    flags = 0b11000010 | 0b00000100  # username, password, clean session, will (QoS 0)
    body = _raw(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    body += _raw(f"will-{uuid.uuid4().hex[:8]}".encode()) + _raw(will_topic) + _raw(b"gone")
    body += _raw(b"service:prototest") + _raw(token)
    sock = socket.create_connection((platform.mqtt_host, platform.mqtt_port), timeout=10)
    sock.sendall(_packet(0x10, body))
    return sock


BAD_WILL_TOPICS = {
    "wildcards": b"a/+/#",
    "a single-level wildcard": b"a/+",
    "NUL": b"a/\x00",
    "empty": b"",
    "invalid UTF-8": b"a/\xff",
}


@pytest.mark.parametrize("will_topic", BAD_WILL_TOPICS.values(), ids=BAD_WILL_TOPICS.keys())
def test_a_bad_will_topic_is_refused_at_connect(platform: Platform, will_topic: bytes) -> None:
    sock = _connect_with_will(platform, will_topic)
    try:
        assert _closed_without_reply(sock)  # no CONNACK: 3.1.1 has no code for a malformed packet
    finally:
        sock.close()


def test_a_will_is_delivered_once_to_each_matching_subscription(platform: Platform) -> None:
    prefix = f"strict/{uuid.uuid4().hex}"
    watcher = RawClient(platform, f"watcher-{uuid.uuid4().hex[:8]}")
    sock = _connect_with_will(platform, f"{prefix}/will".encode())
    try:
        assert watcher.subscribe(f"{prefix}/+", 0) == 0
        assert watcher.subscribe(f"{prefix}/#", 0) == 0
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        sock.close()  # no DISCONNECT: the will goes out, once per matching subscription
        assert [watcher.read().publish()[0] for _ in range(2)] == [f"{prefix}/will"] * 2
        marker = f"{prefix}/marker/end"  # matches "#" only: sent after every copy of the will
        watcher.publish(marker, b"after the will", 0)
        assert watcher.read().publish()[0] == marker
    finally:
        watcher.close()
        sock.close()
