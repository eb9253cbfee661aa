"""The CONNECT decoder's refusals at the edges of the packet: fields missing, extra, or malformed.

In-memory, like the CONNECT cases of ``test_codec.py``; the same decoder runs behind every real
broker in ``test_connect_auth.py`` and ``test_protocol_strict.py``.
"""

from __future__ import annotations

import struct

import pytest
from amqtt.adapters import BufferReader
from amqtt.errors import MQTTError, NoDataError

from broker_plugins.connect import read_connect
from tests.broker_plugins.recording import RecordingWriter
from tests.support.wire import remaining_length

CLEAN, WILL, PASSWORD, USERNAME, RESERVED = 0x02, 0x04, 0x40, 0x80, 0x01


def _raw(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _connect(flags: int, *fields: bytes, name: bytes = b"MQTT", level: int = 4) -> bytes:
    body = _raw(name) + bytes([level, flags]) + struct.pack("!H", 60) + b"".join(fields)
    return b"\x10" + remaining_length(len(body)) + body


async def test_no_client_id_with_a_clean_session_gets_one_and_its_peer_may_be_unknown() -> None:
    connect = await read_connect(BufferReader(_connect(CLEAN)), RecordingWriter())  # the body ends before it
    assert connect.client_id.startswith("amqtt/")
    assert (connect.username, connect.password, connect.remote) == (None, None, "unknown:0")


REFUSED_WITH_CONNACK_4 = {
    "username flag, the body ends first": _connect(CLEAN | USERNAME, _raw(b"phone")),
    "password flag, the body ends first": _connect(CLEAN | USERNAME | PASSWORD, _raw(b"phone"), _raw(b"42")),
    "password without username": _connect(CLEAN | PASSWORD, _raw(b"phone"), _raw(b"token")),
}


@pytest.mark.parametrize("packet", REFUSED_WITH_CONNACK_4.values(), ids=REFUSED_WITH_CONNACK_4.keys())
async def test_credentials_flagged_but_missing_get_connack_4(packet: bytes) -> None:
    recorder = RecordingWriter()
    with pytest.raises(MQTTError, match="CONNECT refused"):
        await read_connect(BufferReader(packet), recorder)
    assert (recorder.written, recorder.closed) == (b"\x20\x02\x00\x04", True)


CLOSED_WITHOUT_CONNACK = {
    "a will without its message": _connect(CLEAN | WILL, _raw(b"svc"), _raw(b"status/svc")),
    "the reserved flag [MQTT-3.1.2-3]": _connect(CLEAN | RESERVED, _raw(b"phone")),
    "another protocol name [MQTT-3.1.2-1]": _connect(CLEAN, _raw(b"phone"), name=b"MQIsdp"),
    "a protocol name that is not UTF-8": _connect(CLEAN, _raw(b"phone"), name=b"MQ\xff"),
    "bytes after the last field": _connect(CLEAN, _raw(b"phone"), b"\x00"),
    "the first packet is not a CONNECT [MQTT-3.1.0-1]": b"\x30\x00",
    "a remaining length of five bytes": b"\x10\xff\xff\xff\xff\x01",
}


@pytest.mark.parametrize("packet", CLOSED_WITHOUT_CONNACK.values(), ids=CLOSED_WITHOUT_CONNACK.keys())
async def test_a_malformed_connect_is_refused_without_connack(packet: bytes) -> None:
    recorder = RecordingWriter()
    with pytest.raises(MQTTError):
        await read_connect(BufferReader(packet), recorder)
    assert recorder.written == b""


TRUNCATED = {
    "inside the fixed header": b"\x10",
    "before the body's end": _connect(CLEAN, _raw(b"phone"))[:-2],
    "inside the variable header": b"\x10\x07" + _raw(b"MQTT") + b"\x04",
}


@pytest.mark.parametrize("packet", TRUNCATED.values(), ids=TRUNCATED.keys())
async def test_a_connection_ending_inside_its_connect_is_no_data(packet: bytes) -> None:
    with pytest.raises(NoDataError):
        await read_connect(BufferReader(packet), RecordingWriter())


async def test_a_password_that_is_not_utf_8_is_kept_for_the_token_check_to_refuse() -> None:
    packet = _connect(CLEAN | USERNAME | PASSWORD, _raw(b"phone"), _raw(b"42"), _raw(b"\xff"))
    connect = await read_connect(BufferReader(packet), RecordingWriter())
    assert connect.password == "b'\\xff'"
