"""MQTT 3.1.1 framing for the broker: every packet after CONNECT, as bytes.

amqtt builds a packet object per message (fixed header, variable header, payload, a
timestamp) and reads each fixed header one byte per ``await``. A broker relaying tens of
thousands of messages a second cannot afford either: here a whole read is split into
packets in one pass, and a PUBLISH going to many subscribers is encoded once. SUBSCRIBE,
UNSUBSCRIBE and their acknowledgements are here too, so that only the CONNECT (read once
per connection, in ``connect.py``) goes through amqtt's packet classes.
"""

from __future__ import annotations

__all__ = [
    "PINGRESP_PACKET",
    "IncompletePacket",
    "MalformedPacket",
    "ack_packet",
    "connack_packet",
    "encode_publish",
    "next_packet",
    "parse_publish",
    "parse_subscribe",
    "parse_unsubscribe",
    "publish_head",
    "suback_packet",
    "unsuback_packet",
]

PINGRESP_PACKET = b"\xd0\x00"
_MAX_LENGTH_BYTES = 4
_PUBLISH = 0x30
_MAX_QOS = 2  # a requested QoS byte above it (QoS 3, reserved bits) is malformed


class MalformedPacket(ValueError):
    """Bytes that cannot be MQTT 3.1.1: the connection must be closed [MQTT-4.8.0-1]."""


class IncompletePacket(Exception):
    """The buffer ends inside a packet: read more."""


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        digit, length = length & 0x7F, length >> 7
        if length:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def next_packet(buffer: bytes | bytearray, start: int) -> tuple[int, int, int]:
    """The packet at ``start``: (first byte, body start, body end). Raises ``IncompletePacket``."""
    size = len(buffer)
    if size - start < 2:  # noqa: PLR2004 - the shortest packet has two bytes
        raise IncompletePacket
    first = buffer[start]
    length = 0
    shift = 0
    index = start + 1
    for _ in range(_MAX_LENGTH_BYTES):
        if index >= size:
            raise IncompletePacket
        byte = buffer[index]
        index += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    else:
        raise MalformedPacket("remaining length longer than four bytes")
    end = index + length
    if end > size:
        raise IncompletePacket
    return first, index, end


def parse_publish(flags: int, body: bytes) -> tuple[str, int | None, bytes]:
    """(topic, packet id or ``None`` for QoS 0, payload) of a PUBLISH body."""
    if len(body) < 2:  # noqa: PLR2004 - the topic length
        raise MalformedPacket("PUBLISH without a topic")
    topic_end = 2 + ((body[0] << 8) | body[1])
    if topic_end > len(body):
        raise MalformedPacket("PUBLISH topic runs past the packet")
    try:
        topic = body[2:topic_end].decode()
    except UnicodeDecodeError:
        raise MalformedPacket("PUBLISH topic is not UTF-8 [MQTT-1.5.3-1]") from None
    if "\x00" in topic:
        raise MalformedPacket("NUL in a PUBLISH topic [MQTT-1.5.3-2]")
    if flags & 0x06:
        if topic_end + 2 > len(body):
            raise MalformedPacket("PUBLISH without its packet id")
        packet_id = (body[topic_end] << 8) | body[topic_end + 1]
        return topic, packet_id, body[topic_end + 2 :]
    return topic, None, body[topic_end:]


def publish_head(topic: bytes, payload_length: int, qos: int, retain: bool, dup: bool = False) -> bytes:
    """Fixed header and topic of a PUBLISH; for QoS > 0 the 2-byte packet id must follow."""
    first = _PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    remaining = 2 + len(topic) + (2 if qos else 0) + payload_length
    return bytes((first,)) + _remaining_length(remaining) + len(topic).to_bytes(2) + topic


def encode_publish(  # noqa: PLR0917 - the fields of the packet, in wire order
    topic: str, payload: bytes, qos: int, packet_id: int | None, retain: bool = False, dup: bool = False
) -> bytes:
    """A whole PUBLISH packet."""
    head = publish_head(topic.encode(), len(payload), qos, retain, dup)
    if qos:
        if not packet_id:
            raise ValueError("QoS > 0 needs a packet id")
        return head + packet_id.to_bytes(2) + payload
    return head + payload


def ack_packet(packet_type: int, packet_id: int) -> bytes:
    """PUBACK (4), PUBREC (5), PUBREL (6, flags 0b0010) or PUBCOMP (7) for ``packet_id``."""
    first = (packet_type << 4) | (0x02 if packet_type == 6 else 0)  # noqa: PLR2004 - PUBREL
    return bytes((first, 2)) + packet_id.to_bytes(2)


def _string(body: bytes, position: int) -> tuple[str, int]:
    """A length-prefixed UTF-8 string at ``position``: (string, position after it)."""
    if position + 2 > len(body):
        raise MalformedPacket("string length runs past the packet")
    end = position + 2 + ((body[position] << 8) | body[position + 1])
    if end > len(body):
        raise MalformedPacket("string runs past the packet")
    try:
        text = body[position + 2 : end].decode()
    except UnicodeDecodeError:
        raise MalformedPacket("topic filter is not UTF-8 [MQTT-1.5.3-1]") from None
    if "\x00" in text:
        raise MalformedPacket("NUL in a topic filter [MQTT-1.5.3-2]")
    return text, end


def parse_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """(packet id, [(topic filter, requested QoS), ...]) of a SUBSCRIBE body [MQTT-3.8.3-3]."""
    if len(body) < 2:  # noqa: PLR2004 - the packet id
        raise MalformedPacket("SUBSCRIBE without a packet id")
    position, asked = 2, []
    while position < len(body):
        topic_filter, position = _string(body, position)
        if position >= len(body):
            raise MalformedPacket("SUBSCRIBE filter without its QoS")
        requested = body[position]
        if requested > _MAX_QOS:
            raise MalformedPacket(f"SUBSCRIBE asks for QoS byte {requested:#04x} [MQTT-3.8.3-4]")
        asked.append((topic_filter, requested))
        position += 1
    if not asked:
        raise MalformedPacket("SUBSCRIBE without a topic filter [MQTT-3.8.3-3]")
    return (body[0] << 8) | body[1], asked


def parse_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    """(packet id, [topic filter, ...]) of an UNSUBSCRIBE body [MQTT-3.10.3-2]."""
    if len(body) < 2:  # noqa: PLR2004 - the packet id
        raise MalformedPacket("UNSUBSCRIBE without a packet id")
    position, filters = 2, []
    while position < len(body):
        topic_filter, position = _string(body, position)
        filters.append(topic_filter)
    if not filters:
        raise MalformedPacket("UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]")
    return (body[0] << 8) | body[1], filters


def suback_packet(packet_id: int, return_codes: list[int]) -> bytes:
    """SUBACK: one return code per filter, in order."""
    return b"\x90" + _remaining_length(2 + len(return_codes)) + packet_id.to_bytes(2) + bytes(return_codes)


def unsuback_packet(packet_id: int) -> bytes:
    """UNSUBACK."""
    return b"\xb0\x02" + packet_id.to_bytes(2)


def connack_packet(*, session_present: bool, return_code: int) -> bytes:
    """CONNACK: session present flag and return code (0 accepted)."""
    return bytes((0x20, 2, 1 if session_present and not return_code else 0, return_code))
