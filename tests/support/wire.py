"""Raw MQTT 3.1.1 bytes, for tests that must see exactly what crosses the wire."""

from __future__ import annotations

import asyncio
import struct

from broker_plugins.codec import IncompletePacket, next_packet

__all__ = ["PacketReader", "connect_packet", "remaining_length", "subscribe_packet"]


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


def subscribe_packet(topic: str, *, packet_id: int = 1, qos: int = 1) -> bytes:
    """A SUBSCRIBE of one filter."""
    body = struct.pack("!H", packet_id) + _field(topic) + bytes([qos])
    return b"\x82" + remaining_length(len(body)) + body


class PacketReader:
    """Whole packets from a raw client socket, framed by the broker's own codec."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader, self._buffer = reader, b""

    async def packet(self) -> tuple[int, bytes] | None:
        """The next packet (first byte, body), or ``None`` once the broker closed the connection."""
        while True:
            try:
                first, start, end = next_packet(self._buffer, 0)
            except IncompletePacket:
                data = await self._reader.read(1 << 16)
                if not data:
                    return None
                self._buffer += data
                continue
            body, self._buffer = self._buffer[start:end], self._buffer[end:]
            return first, body
