"""The CONNECT decoder's refusals at the edges of the packet: fields missing, extra, or malformed.

In-memory, like the CONNECT cases of ``test_codec.py``; the same framing and decoder run behind
every real broker in ``test_connect_auth.py``, ``test_connect_phase.py`` and
``test_protocol_strict.py`` (where a first packet that is not a CONNECT, or a CONNECT that
never completes, closes the connection).
"""

from __future__ import annotations

import struct

import pytest
from amqtt.errors import MQTTError

from broker_plugins.codec import IncompletePacket, MalformedPacket, next_packet
from broker_plugins.connect import Connect, ConnectRefused, decode_connect
from tests.support.wire import remaining_length

CLEAN, WILL, PASSWORD, USERNAME, RESERVED = 0x02, 0x04, 0x40, 0x80, 0x01


def _raw(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _connect(flags: int, *fields: bytes, name: bytes = b"MQTT", level: int = 4) -> bytes:
    body = _raw(name) + bytes([level, flags]) + struct.pack("!H", 60) + b"".join(fields)
    return b"\x10" + remaining_length(len(body)) + body


def _decode(packet: bytes) -> Connect:
    """Frame ``packet`` as the handler does, then decode its body."""
    first, start, end = next_packet(packet, 0)
    assert (first >> 4, end) == (1, len(packet))
    return decode_connect(packet[start:end], "192.0.2.1:40000")


def test_no_client_id_with_a_clean_session_gets_one() -> None:
    connect = _decode(_connect(CLEAN))  # the body ends before it
    assert connect.client_id.startswith("amqtt/")
    assert (connect.username, connect.password, connect.remote) == (None, None, "192.0.2.1:40000")


REFUSED_WITH_CONNACK_4 = {
    "username flag, the body ends first": _connect(CLEAN | USERNAME, _raw(b"phone")),
    "password flag, the body ends first": _connect(CLEAN | USERNAME | PASSWORD, _raw(b"phone"), _raw(b"42")),
    "password without username": _connect(CLEAN | PASSWORD, _raw(b"phone"), _raw(b"token")),
}


@pytest.mark.parametrize("packet", REFUSED_WITH_CONNACK_4.values(), ids=REFUSED_WITH_CONNACK_4.keys())
def test_credentials_flagged_but_missing_get_connack_4(packet: bytes) -> None:
    with pytest.raises(ConnectRefused, match="CONNECT refused") as refused:
        _decode(packet)
    assert refused.value.return_code == 4


CLOSED_WITHOUT_CONNACK = {
    "a will without its message": _connect(CLEAN | WILL, _raw(b"svc"), _raw(b"status/svc")),
    "the reserved flag [MQTT-3.1.2-3]": _connect(CLEAN | RESERVED, _raw(b"phone")),
    "another protocol name [MQTT-3.1.2-1]": _connect(CLEAN, _raw(b"phone"), name=b"MQIsdp"),
    "a protocol name that is not UTF-8": _connect(CLEAN, _raw(b"phone"), name=b"MQ\xff"),
    "bytes after the last field": _connect(CLEAN, _raw(b"phone"), b"\x00"),
}


@pytest.mark.parametrize("packet", CLOSED_WITHOUT_CONNACK.values(), ids=CLOSED_WITHOUT_CONNACK.keys())
def test_a_malformed_connect_is_refused_without_connack(packet: bytes) -> None:
    with pytest.raises(MQTTError) as raised:
        _decode(packet)
    assert not isinstance(raised.value, ConnectRefused)


@pytest.mark.parametrize(
    "packet", [b"\x10\x07" + _raw(b"MQTT") + b"\x04", b"\x10\x00"], ids=["inside it", "an empty body"]
)
def test_a_whole_connect_ending_inside_its_variable_header_is_malformed(packet: bytes) -> None:
    # Found by the MQTT fuzz test: this raised NoDataError, which the handler took for a bug.
    with pytest.raises(MQTTError, match="ends inside its variable header") as raised:
        _decode(packet)
    assert not isinstance(raised.value, ConnectRefused)


@pytest.mark.parametrize(
    "packet",
    [b"\x10", _connect(CLEAN, _raw(b"phone"))[:-2]],
    ids=["inside the fixed header", "before the body's end"],
)
def test_a_connect_still_arriving_is_framed_once_whole(packet: bytes) -> None:
    with pytest.raises(IncompletePacket):
        next_packet(packet, 0)


def test_a_remaining_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket):
        next_packet(b"\x10\xff\xff\xff\xff\x01", 0)


def test_a_password_that_is_not_utf_8_is_kept_for_the_token_check_to_refuse() -> None:
    packet = _connect(CLEAN | USERNAME | PASSWORD, _raw(b"phone"), _raw(b"42"), _raw(b"\xff"))
    assert _decode(packet).password == "b'\\xff'"
