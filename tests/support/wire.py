"""Raw MQTT 3.1.1 bytes, for tests that must see exactly what crosses the wire."""

from __future__ import annotations

import struct

__all__ = ["connect_packet", "remaining_length"]


def remaining_length(value: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    encoded = bytearray()
    while True:
        byte, value = value % 128, value // 128
        encoded.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def _field(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, username: str, password: str, keepalive: int = 30) -> bytes:
    """A clean-session CONNECT with username and password."""
    body = _field("MQTT") + bytes([4, 0b11000010]) + struct.pack("!H", keepalive)
    body += _field(client_id) + _field(username) + _field(password)
    return b"\x10" + remaining_length(len(body)) + body
