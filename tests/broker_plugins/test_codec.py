"""The broker's own framing (codec.py) and its one amqtt touch, the CONNECT decoder (connect.py).

In-memory and fast: the same packets go through a real broker in ``test_protocol_delivery.py``
and ``test_connect_auth.py``.
"""

from __future__ import annotations

import struct

import pytest
from amqtt.errors import MQTTError

from broker_plugins.codec import (
    MalformedPacket,
    connack_packet,
    next_packet,
    parse_subscribe,
    parse_unsubscribe,
    suback_packet,
    unsuback_packet,
)
from broker_plugins.connect import Connect, ConnectRefused, decode_connect
from tests.support.wire import connect_packet, remaining_length


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def test_subscribe_lists_each_filter_with_its_qos() -> None:
    body = b"\x00\x07" + _string("user/1/inbox") + b"\x01" + _string("presence/2") + b"\x00"
    assert parse_subscribe(body) == (7, [("user/1/inbox", 1), ("presence/2", 0)])


@pytest.mark.parametrize(
    "body",
    [
        b"\x00",  # no packet id
        b"\x00\x07",  # no filter [MQTT-3.8.3-3]
        b"\x00\x07" + _string("a/b"),  # no QoS
        b"\x00\x07\x00\x09a/b\x01",  # the filter runs past the packet
        b"\x00\x07\x00\x02\xff\xfe\x01",  # not UTF-8
    ],
)
def test_a_malformed_subscribe_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_subscribe(body)


def test_unsubscribe_lists_each_filter() -> None:
    assert parse_unsubscribe(b"\x01\x00" + _string("a") + _string("b/c")) == (256, ["a", "b/c"])
    with pytest.raises(MalformedPacket):
        parse_unsubscribe(b"\x01\x00")


def test_acknowledgements_are_framed_as_mqtt_3_1_1_says() -> None:
    assert suback_packet(7, [1, 0x80]) == b"\x90\x04\x00\x07\x01\x80"
    assert unsuback_packet(258) == b"\xb0\x02\x01\x02"
    assert connack_packet(session_present=True, return_code=0) == b"\x20\x02\x01\x00"
    # A refused CONNECT never says a session is present [MQTT-3.2.2-4].
    assert connack_packet(session_present=True, return_code=5) == b"\x20\x02\x00\x05"
    assert next_packet(suback_packet(7, [1]), 0) == (0x90, 2, 5)


def _decode(packet: bytes) -> Connect:
    """Frame ``packet`` as the handler does, then decode its body."""
    _, start, end = next_packet(packet, 0)
    return decode_connect(packet[start:end], "192.0.2.1:40000")


def test_a_connect_is_read_into_plain_fields_with_its_peer() -> None:
    connect = _decode(connect_packet("phone-1", "42", "token", keepalive=30))
    assert (connect.client_id, connect.username, connect.password) == ("phone-1", "42", "token")
    assert (connect.clean_session, connect.keep_alive, connect.will) == (True, 30, None)
    assert connect.remote == "192.0.2.1:40000"


def test_a_will_is_read() -> None:
    flags = 0b11000010 | 0b00100100 | 0b00001000  # user, password, clean; will retained; will QoS 1
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", 10)
    body += _string("svc") + _string("status/svc") + _string("gone") + _string("service:x") + _string("t")
    connect = _decode(b"\x10" + remaining_length(len(body)) + body)
    assert connect.will is not None
    assert (connect.will.topic, connect.will.payload, connect.will.qos, connect.will.retain) == (
        "status/svc",
        b"gone",
        1,
        True,
    )


def test_an_unsupported_protocol_level_is_refused_with_connack_1() -> None:
    body = _string("MQTT") + bytes([3, 0b00000010]) + struct.pack("!H", 10) + _string("phone-1")
    with pytest.raises(ConnectRefused, match="protocol level 3") as refused:
        _decode(b"\x10" + remaining_length(len(body)) + body)
    assert refused.value.return_code == 1


def test_no_client_id_with_a_persistent_session_is_refused_with_connack_2() -> None:
    body = _string("MQTT") + bytes([4, 0b00000000]) + struct.pack("!H", 10) + _string("")
    with pytest.raises(ConnectRefused, match=r"MQTT-3\.1\.3-8") as refused:
        _decode(b"\x10" + remaining_length(len(body)) + body)
    assert refused.value.return_code == 2


@pytest.mark.parametrize(
    ("client_id", "username"),
    [(b"a\x00b", b"42"), (b"a\xffb", b"42"), (b"phone", b"4\x002"), (b"ph", b"\xc3")],
)
def test_a_connect_string_that_is_not_utf_8_without_nul_closes_without_connack(
    client_id: bytes, username: bytes
) -> None:
    # amqtt's decoder read invalid UTF-8 as str(bytes) ("b'a\\xffb'"): this one must notice.
    def raw(data: bytes) -> bytes:
        return struct.pack("!H", len(data)) + data

    body = _string("MQTT") + bytes([4, 0b11000010]) + struct.pack("!H", 10)
    body += raw(client_id) + raw(username) + _string("token")
    with pytest.raises(MQTTError, match=r"MQTT-1\.5\.3") as raised:
        _decode(b"\x10" + remaining_length(len(body)) + body)
    assert not isinstance(raised.value, ConnectRefused)  # no CONNACK code says "malformed"
