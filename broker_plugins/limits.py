"""Refuse an MQTT packet larger than the limit from its fixed header, before reading its body.

Without this guard a client could make the broker buffer up to 256 MB per connection.
The handler's parser applies it to every packet, the CONNECT included (``next_packet_within``):
the size of each complete packet, and the remaining-length field of an incomplete one
(``check_announced_size``).
"""

from __future__ import annotations

from broker_plugins.codec import IncompletePacket, MalformedPacket, next_packet

__all__ = ["NotConnect", "PacketTooLarge", "check_announced_size", "next_packet_within"]

_CONTINUATION = 0x80
_LENGTH_BITS = 0x7F


class PacketTooLarge(MalformedPacket):
    """A packet announced a body larger than the configured limit."""


class NotConnect(MalformedPacket):
    """The first packet of a connection is not a CONNECT [MQTT-3.1.0-1]."""


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
