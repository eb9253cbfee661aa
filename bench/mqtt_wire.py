"""A minimal MQTT 3.1.1 client codec over asyncio streams, for the benchmark's hot path.

Why not paho or amqtt's client: both spend more CPU per message than the broker under test
on a 2-core machine, so the load generator would measure itself. This module encodes only the
packets a benchmark client sends, decodes incoming bytes in batches (one ``read`` can yield
hundreds of packets), and does no per-message allocation beyond the packet body.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Final, NamedTuple

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

PINGREQ_PACKET: Final = b"\xc0\x00"
DISCONNECT_PACKET: Final = b"\xe0\x00"
SUBACK_FAILURE: Final = 0x80
MAX_REMAINING_LENGTH: Final = 268_435_455  # the largest value four varint bytes can hold
_VARINT_MAX_BYTES: Final = 4
_U16 = struct.Struct(">H")
_MAX_PACKET_ID: Final = 0xFFFF
DISCONNECT_GRACE: Final = 2.0  # seconds to flush DISCONNECT before closing anyway


class MqttProtocolError(Exception):
    """The peer sent bytes that are not valid MQTT 3.1.1, or an unexpected packet."""


class ConnectRefusedError(Exception):
    """The broker answered CONNECT with a non-zero CONNACK return code (e.g. bad credentials)."""

    def __init__(self, return_code: int) -> None:
        super().__init__(f"CONNACK return code {return_code}")
        self.return_code = return_code


class ConnectionClosedError(Exception):
    """The broker closed the TCP stream; benchmark clients never expect that mid-run."""


class Packet(NamedTuple):
    """One decoded control packet: type, the fixed header's low nibble and the rest of the bytes."""

    ptype: int
    flags: int
    body: bytes


class Publish(NamedTuple):
    """A decoded PUBLISH: the receiver needs the topic, payload and, for QoS 1, the id to acknowledge."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int | None
    retain: bool
    dup: bool


def encode_remaining_length(length: int) -> bytes:
    """Encode the fixed header's variable-length integer (1 to 4 bytes, 7 bits each)."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length out of range: {length}")
    out = bytearray()
    for _ in range(_VARINT_MAX_BYTES):
        digit, length = length & 0x7F, length >> 7
        out.append(digit | 0x80 if length else digit)
        if not length:
            break
    return bytes(out)


def encode_string(text: str) -> bytes:
    """Encode an MQTT UTF-8 string: 2-byte big-endian length, then the bytes."""
    raw = text.encode()
    return _U16.pack(len(raw)) + raw


def encode_binary(data: bytes) -> bytes:
    """Encode MQTT binary data (the password field): 2-byte length, then the bytes."""
    return _U16.pack(len(data)) + data


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_remaining_length(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    username: str | None = None,
    password: str | bytes | None = None,
    keepalive: int = 60,
    clean_session: bool = True,
) -> bytes:
    """Build CONNECT; a password without a username is invalid in 3.1.1, so it is refused here."""
    if password is not None and username is None:
        raise ValueError("MQTT 3.1.1 forbids a password without a username")
    flags = 0x02 if clean_session else 0x00
    payload = encode_string(client_id)
    if username is not None:
        flags |= 0x80
        payload += encode_string(username)
    if password is not None:
        flags |= 0x40
        payload += encode_binary(password.encode() if isinstance(password, str) else password)
    variable = encode_string("MQTT") + bytes([4, flags]) + _U16.pack(keepalive)
    return _packet(CONNECT << 4, variable + payload)


def encode_subscribe(packet_id: int, topics: list[tuple[str, int]]) -> bytes:
    """Build SUBSCRIBE; its fixed-header flags must be 0b0010 per the spec."""
    body = _U16.pack(packet_id) + b"".join(encode_string(t) + bytes([q]) for t, q in topics)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def publish_prefix(topic: str, payload_len: int, qos: int = 0, retain: bool = False) -> bytes:
    """Everything of a QoS 0 PUBLISH before its payload, so a sender can precompute it per topic.

    For QoS 1 the packet id must follow this prefix; ``payload_len`` then excludes those 2 bytes.
    """
    id_len = 2 if qos else 0
    topic_raw = encode_string(topic)
    first = (PUBLISH << 4) | (qos << 1) | int(retain)
    return bytes([first]) + encode_remaining_length(len(topic_raw) + id_len + payload_len) + topic_raw


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None, retain: bool = False
) -> bytes:
    """Build PUBLISH; QoS 1 needs a non-zero packet id, QoS 0 must not carry one."""
    if qos not in (0, 1):
        raise ValueError("only QoS 0 and 1 are supported")
    if qos and not packet_id:
        raise ValueError("QoS 1 PUBLISH needs a packet id")
    ident = _U16.pack(packet_id) if qos and packet_id else b""
    return publish_prefix(topic, len(payload), qos, retain) + ident + payload


def encode_puback(packet_id: int) -> bytes:
    """Build PUBACK, the receiver's half of the QoS 1 handshake."""
    return b"\x40\x02" + _U16.pack(packet_id)


def parse_connack(body: bytes) -> tuple[bool, int]:
    """Return (session present, return code)."""
    if len(body) != 2:  # noqa: PLR2004 - CONNACK's body is exactly two bytes
        raise MqttProtocolError("CONNACK body must be 2 bytes")
    return bool(body[0] & 0x01), body[1]


def parse_suback(body: bytes) -> tuple[int, list[int]]:
    """Return (packet id, granted QoS per topic; 0x80 means the broker refused that topic)."""
    if len(body) < 3:  # noqa: PLR2004 - packet id plus at least one return code
        raise MqttProtocolError("SUBACK too short")
    return _U16.unpack_from(body)[0], list(body[2:])


def parse_packet_id(body: bytes) -> int:
    """Read the packet id of PUBACK (and any ack whose body starts with one)."""
    if len(body) < 2:  # noqa: PLR2004 - a packet id is two bytes
        raise MqttProtocolError("acknowledgement too short")
    return int(_U16.unpack_from(body)[0])


def parse_publish(flags: int, body: bytes) -> Publish:
    """Split a PUBLISH body into topic, optional packet id and payload."""
    qos = (flags >> 1) & 0x03
    if qos > 2:  # noqa: PLR2004 - QoS 3 is reserved
        raise MqttProtocolError("PUBLISH with QoS 3")
    topic_len = _U16.unpack_from(body)[0]
    pos = 2 + topic_len
    packet_id = None
    if qos:
        packet_id = _U16.unpack_from(body, pos)[0]
        pos += 2
    topic = body[2 : 2 + topic_len].decode()
    return Publish(topic, body[pos:], qos, packet_id, bool(flags & 0x01), bool(flags & 0x08))


def publish_payload_offset(flags: int, body: bytes) -> int:
    """Where the payload starts in a PUBLISH body: the receive hot path skips decoding the topic."""
    return 2 + int(_U16.unpack_from(body)[0]) + (2 if flags & 0x06 else 0)


class PacketDecoder:
    """Incremental decoder: feed it whatever ``read`` returned, get back every complete packet.

    Bytes of an incomplete trailing packet stay buffered until the next feed; a remaining
    length above ``max_packet_size`` is refused so a broken peer cannot make us buffer forever.
    """

    def __init__(self, max_packet_size: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._max = max_packet_size

    def feed(self, data: bytes) -> list[Packet]:
        """Append ``data`` and return the packets it completed, in order."""
        buf = self._buf
        buf += data
        out: list[Packet] = []
        pos, size = 0, len(buf)
        while size - pos >= 2:  # noqa: PLR2004 - the smallest packet is two bytes; bounded by size
            first = buf[pos]
            length, mult, i, complete = 0, 1, pos + 1, False
            for _ in range(_VARINT_MAX_BYTES):
                if i >= size:
                    break
                digit = buf[i]
                i += 1
                length += (digit & 0x7F) * mult
                if not digit & 0x80:
                    complete = True
                    break
                mult <<= 7
            else:
                raise MqttProtocolError("remaining length longer than 4 bytes")
            if not complete:
                break
            if length > self._max:
                raise MqttProtocolError(f"packet of {length} bytes exceeds the limit")
            end = i + length
            if end > size:
                break
            out.append(Packet(first >> 4, first & 0x0F, bytes(buf[i:end])))
            pos = end
        if pos:
            del buf[:pos]
        return out


class MqttConnection:
    """One client connection: stream pair, decoder, packet ids and packets read but not yet consumed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = PacketDecoder()
        self._pending: deque[Packet] = deque()
        self._next_id = 0

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 60,
        clean_session: bool = True,
        source_host: str | None = None,
    ) -> MqttConnection:
        """Open TCP (from ``source_host`` if given), send CONNECT and wait for a successful CONNACK.

        Like every awaitable here it has no timeout of its own: callers wrap it in
        ``asyncio.timeout`` so one deadline can cover a whole handshake sequence.
        """
        local = (source_host, 0) if source_host is not None else None
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20, local_addr=local)
        conn = cls(reader, writer)
        connect = encode_connect(
            client_id, username=username, password=password, keepalive=keepalive, clean_session=clean_session
        )
        try:
            await conn._handshake(connect)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _handshake(self, connect: bytes) -> None:
        self.writer.write(connect)
        packet = await self.read_packet()
        if packet.ptype != CONNACK:
            raise MqttProtocolError(f"expected CONNACK, got packet type {packet.ptype}")
        _, code = parse_connack(packet.body)
        if code:
            raise ConnectRefusedError(code)

    def next_packet_id(self) -> int:
        """Return ids 1..65535 in turn (0 is not a valid packet id)."""
        self._next_id = self._next_id % _MAX_PACKET_ID + 1
        return self._next_id

    async def read_packets(self) -> list[Packet]:
        """Return buffered packets or wait for the next chunk; raise on EOF. May return []."""
        if self._pending:
            out = list(self._pending)
            self._pending.clear()
            return out
        data = await self.reader.read(1 << 16)
        if not data:
            raise ConnectionClosedError("broker closed the connection")
        return self.decoder.feed(data)

    async def read_packet(self) -> Packet:
        """Return the next single packet (handshake use; the hot path uses ``read_packets``)."""
        for _ in range(1 << 16):  # bounded: each round reads at least one byte or raises
            if self._pending:
                return self._pending.popleft()
            self._pending.extend(await self.read_packets())
        raise MqttProtocolError("no complete packet after 65536 reads")

    @classmethod
    async def subscribed(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str,
        password: str,
        topic: str,
        keepalive: int = 60,
    ) -> MqttConnection:
        """A device's connection as the benchmarks hold it: signed in, subscribed to ``topic`` at QoS 1."""
        connection = await cls.open(
            host, port, client_id=client_id, username=username, password=password, keepalive=keepalive
        )
        await connection.subscribe([(topic, 1)])
        return connection

    async def subscribe(self, topics: list[tuple[str, int]]) -> list[int]:
        """Send SUBSCRIBE and return the granted codes; packets arriving first are kept for later."""
        packet_id = self.next_packet_id()
        self.writer.write(encode_subscribe(packet_id, topics))
        skipped: list[Packet] = []
        for _ in range(1 << 16):
            packet = await self.read_packet()
            if packet.ptype == SUBACK and parse_suback(packet.body)[0] == packet_id:
                self._pending.extendleft(reversed(skipped))
                return parse_suback(packet.body)[1]
            skipped.append(packet)
        raise MqttProtocolError("no SUBACK among 65536 packets")

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int | None:
        """Queue a PUBLISH; returns the packet id to expect in PUBACK for QoS 1."""
        packet_id = self.next_packet_id() if qos else None
        self.writer.write(encode_publish(topic, payload, qos, packet_id, retain))
        return packet_id

    def puback(self, packet_id: int) -> None:
        """Acknowledge a QoS 1 PUBLISH we received."""
        self.writer.write(encode_puback(packet_id))

    def ping(self) -> None:
        """Send PINGREQ so the broker's keepalive timer does not drop an idle subscriber."""
        self.writer.write(PINGREQ_PACKET)

    async def disconnect(self) -> None:
        """Send DISCONNECT and close; errors on an already-broken stream are ignored.

        The flush is bounded by ``DISCONNECT_GRACE``: a broker that stopped reading must not
        hold up the harness's shutdown.
        """
        try:
            self.writer.write(DISCONNECT_PACKET)
            async with asyncio.timeout(DISCONNECT_GRACE):
                await self.writer.drain()
        except (OSError, TimeoutError, ConnectionError):
            pass
        self.close()

    def close(self) -> None:
        """Close the transport without waiting; safe to call twice."""
        if not self.writer.is_closing():
            self.writer.close()
