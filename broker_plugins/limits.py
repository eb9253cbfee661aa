"""Refuse an MQTT packet larger than the limit from its fixed header, before reading its body.

Without this guard a client could make the broker buffer up to 256 MB per connection.
Two places apply it: ``PacketLimitReader`` around the reader the CONNECT is decoded from
(amqtt reads a body with one ``readexactly(remaining_length)``), and the handler's parser
for every packet after it (``next_packet_within``): the size of each complete packet, and
the remaining-length field of an incomplete one (``check_announced_size``).
"""

from __future__ import annotations

from amqtt.adapters import ReaderAdapter
from amqtt.errors import AMQTTError

from broker_plugins.codec import IncompletePacket, next_packet

__all__ = ["NotConnect", "PacketLimitReader", "PacketTooLarge", "check_announced_size", "next_packet_within"]

_CONNECT = 1
_CONTINUATION = 0x80
_LENGTH_BITS = 0x7F


class PacketTooLarge(AMQTTError):
    """A packet announced a body larger than the configured limit."""


class NotConnect(AMQTTError):
    """The first packet of a connection is not a CONNECT [MQTT-3.1.0-1]."""


class PacketLimitReader(ReaderAdapter):
    """Wraps a reader; fails the read that completes an oversized packet's length field.

    It also refuses a connection whose first packet is not a CONNECT at its first byte,
    instead of letting amqtt wait for the body of whatever that byte announced.
    """

    def __init__(self, inner: ReaderAdapter, max_packet_bytes: int) -> None:
        self._inner = inner
        self._limit = max_packet_bytes
        self._first = True
        self._body_left = 0
        self._in_length = False
        self._length = 0
        self._multiplier = 1

    async def read(self, n: int = -1) -> bytes:
        """Read from the wrapped stream, tracking packet boundaries."""
        data: bytes = await self._inner.read(n)
        self._track(data)
        return data

    def feed_eof(self) -> None:
        """Forward EOF to the wrapped reader."""
        self._inner.feed_eof()

    def _track(self, data: bytes) -> None:
        index = 0
        size = len(data)
        while index < size:
            if self._body_left:
                taken = min(self._body_left, size - index)
                self._body_left -= taken
                index += taken
            elif not self._in_length:
                if self._first and data[index] >> 4 != _CONNECT:
                    raise NotConnect(f"first packet has type {data[index] >> 4}, not CONNECT")
                self._first = False
                self._in_length = True  # this byte is the packet type; the length follows
                self._length = 0
                self._multiplier = 1
                index += 1
            else:
                byte = data[index]
                index += 1
                self._length += (byte & _LENGTH_BITS) * self._multiplier
                self._multiplier *= 128
                if not byte & _CONTINUATION:
                    self._in_length = False
                    if self._length > self._limit:
                        raise PacketTooLarge(
                            f"packet of {self._length} bytes exceeds the {self._limit}-byte limit"
                        )
                    self._body_left = self._length


def check_announced_size(buffer: bytes, position: int, limit: int) -> None:
    """Raise ``PacketTooLarge`` if the incomplete packet at ``position`` announces a body above ``limit``.

    The body need not have arrived: the remaining-length field is enough (a client
    announcing 256 MB is refused before sending them). A field still incomplete is left to
    the next call.
    """
    length = 0
    multiplier = 1
    for index in range(position + 1, min(position + 5, len(buffer))):
        byte = buffer[index]
        length += (byte & _LENGTH_BITS) * multiplier
        if not byte & _CONTINUATION:
            if length > limit:
                raise PacketTooLarge(f"packet of {length} bytes exceeds the {limit}-byte limit")
            return
        multiplier *= 128


def next_packet_within(buffer: bytes, position: int, limit: int) -> tuple[int, int, int] | None:
    """``codec.next_packet`` refusing a packet above ``limit``; ``None`` while the packet is incomplete."""
    try:
        first, start, end = next_packet(buffer, position)
    except IncompletePacket:
        check_announced_size(buffer, position, limit)
        return None
    if end - start > limit:
        raise PacketTooLarge(f"packet of {end - start} bytes exceeds the {limit}-byte limit")
    return first, start, end
