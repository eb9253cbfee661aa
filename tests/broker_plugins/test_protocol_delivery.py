"""MQTT 3.1.1 delivery rules the broker overrides amqtt for, checked byte by byte on a real broker.

Service accounts (``service:<name>``) may publish and subscribe to any non-$ topic, so these
tests use them with raw packets: every wait is a blocking socket read with a timeout, and
"nothing arrived before X" is shown by X arriving first, never by sleeping.
"""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker_plugins.handler import MAX_INFLIGHT, QOS0_HIGH_WATER
from hubbub.tokens import TokenCodec
from tests.support.platform import Platform
from tests.support.wire import remaining_length

TIMEOUT_S = 10.0
PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 3, 4, 5, 6, 7, 9


@dataclass(frozen=True)
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    def publish(self) -> tuple[str, int | None, bytes]:
        size = struct.unpack_from("!H", self.body)[0]
        topic = self.body[2 : 2 + size].decode()
        if self.qos:
            return topic, struct.unpack_from("!H", self.body, 2 + size)[0], self.body[4 + size :]
        return topic, None, self.body[2 + size :]


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class RawClient:
    """A blocking MQTT 3.1.1 client that shows exactly what the broker sends."""

    def __init__(
        self, platform: Platform, client_id: str, *, clean: bool = True, receive_buffer: int = 0
    ) -> None:
        secret = (platform.data_dir / "secret.key").read_text().strip()
        token = TokenCodec(secret, access_ttl_s=60).issue_service("prototest")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:  # before connecting, so the kernel does not grow it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(TIMEOUT_S)
        self.sock.connect((platform.mqtt_host, platform.mqtt_port))
        self._buffer = b""
        flags = 0b11000000 | (0b10 if clean else 0)
        body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
        body += _string(client_id) + _string("service:prototest") + _string(token)
        self.sock.sendall(b"\x10" + remaining_length(len(body)) + body)
        connack = self.read()
        assert connack.kind == 2
        assert connack.body[1] == 0, "CONNECT refused"
        self.session_present = bool(connack.body[0] & 0x01)
        self._next_id = 0

    def packet_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, first: int, body: bytes) -> None:
        self.sock.sendall(bytes([first]) + remaining_length(len(body)) + body)

    def read(self) -> Packet:
        for _ in range(10_000):  # each round reads more bytes or returns
            if len(self._buffer) >= 2:
                length, multiplier, index = 0, 1, 1
                while index < len(self._buffer):
                    byte = self._buffer[index]
                    index += 1
                    length += (byte & 0x7F) * multiplier
                    multiplier *= 128
                    if not byte & 0x80:
                        break
                if index + length <= len(self._buffer) and not self._buffer[index - 1] & 0x80:
                    first, body = self._buffer[0], self._buffer[index : index + length]
                    self._buffer = self._buffer[index + length :]
                    return Packet(first >> 4, first & 0x0F, body)
            data = self.sock.recv(65536)
            assert data, "broker closed the connection"
            self._buffer += data
        raise AssertionError("no complete packet")

    def subscribe(self, topic: str, qos: int) -> int:
        self.send(0x82, struct.pack("!H", self.packet_id()) + _string(topic) + bytes([qos]))
        suback = self.read()
        assert suback.kind == SUBACK
        return suback.body[2]

    def publish(self, topic: str, payload: bytes, qos: int, *, retain: bool = False) -> None:
        """Publish and complete the QoS flow from the publisher's side."""
        packet_id = self.packet_id() if qos else None
        body = _string(topic) + (struct.pack("!H", packet_id) if packet_id else b"") + payload
        self.send(0x30 | (qos << 1) | int(retain), body)
        if qos == 1:
            assert self.read() == Packet(PUBACK, 0, struct.pack("!H", packet_id))
        elif qos == 2:
            assert self.read() == Packet(PUBREC, 0, struct.pack("!H", packet_id))
            self.send(0x62, struct.pack("!H", packet_id))
            assert self.read() == Packet(PUBCOMP, 0, struct.pack("!H", packet_id))

    def ack(self, packet: Packet) -> None:
        """Acknowledge a received PUBLISH (QoS 1: PUBACK; QoS 2: PUBREC, then PUBREL -> PUBCOMP)."""
        _, packet_id, _ = packet.publish()
        assert packet_id is not None
        if packet.qos == 1:
            self.send(0x40, struct.pack("!H", packet_id))
        else:
            self.send(0x50, struct.pack("!H", packet_id))
            assert self.read() == Packet(PUBREL, 2, struct.pack("!H", packet_id))
            self.send(0x70, struct.pack("!H", packet_id))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def clients() -> Iterator[list[RawClient]]:
    made: list[RawClient] = []
    yield made
    for client in made:
        client.close()


def _client(platform: Platform, made: list[RawClient], name: str, **kwargs: Any) -> RawClient:  # noqa: ANN401
    client = RawClient(platform, name, **kwargs)
    made.append(client)
    return client


def _shed(platform: Platform, reason: str) -> float:
    """``hubbub_mqtt_shed_total{reason=...}`` from the platform's Prometheus ``/metrics``."""
    text = httpx.get(f"{platform.http_url}/metrics", timeout=TIMEOUT_S).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return next(
        sample.value
        for sample in families["hubbub_mqtt_shed"].samples
        if sample.name == "hubbub_mqtt_shed_total" and sample.labels == {"reason": reason}
    )


def _topic() -> str:
    return f"proto/{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("published", "granted", "delivered"), [(0, 2, 0), (1, 2, 1), (2, 1, 1), (2, 0, 0), (2, 2, 2)]
)
def test_delivery_qos_is_the_minimum_of_publish_and_subscription(
    platform: Platform, clients: list[RawClient], published: int, granted: int, delivered: int
) -> None:
    # MQTT-3.8.4-6: stock amqtt delivered at the subscription's QoS whatever the publish's.
    topic = _topic()
    subscriber = _client(platform, clients, f"sub-{uuid.uuid4().hex[:8]}")
    assert subscriber.subscribe(topic, granted) == granted
    publisher = _client(platform, clients, f"pub-{uuid.uuid4().hex[:8]}")
    publisher.publish(topic, b"hello", published)
    received = subscriber.read()
    assert received.kind == PUBLISH
    assert received.qos == delivered
    assert received.publish()[0] == topic
    assert received.publish()[2] == b"hello"
    assert not received.retain


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_an_empty_retained_publish_clears_the_retained_message(
    platform: Platform, clients: list[RawClient], qos: int
) -> None:
    # MQTT-3.3.1-10/11: a zero-byte retained PUBLISH removes the retained message, at any QoS.
    topic = _topic()
    publisher = _client(platform, clients, f"pub-{uuid.uuid4().hex[:8]}")
    publisher.publish(topic, b"kept", qos, retain=True)
    first = _client(platform, clients, f"sub-{uuid.uuid4().hex[:8]}")
    assert first.subscribe(topic, 2) == 2
    kept = first.read()
    assert (kept.publish()[2], kept.retain) == (b"kept", True)
    publisher.publish(topic, b"", qos, retain=True)
    # Current subscribers get the empty message like any other: proof the broker handled it.
    cleared = first.read()
    assert (cleared.publish()[2], cleared.retain) == (b"", False)
    if cleared.qos:
        first.ack(cleared)
    later = _client(platform, clients, f"sub-{uuid.uuid4().hex[:8]}")
    assert later.subscribe(topic, 0) == 0
    publisher.publish(topic, b"marker", 0)
    # The first thing the new subscriber gets is the live marker: nothing retained is left.
    marker = later.read()
    assert (marker.publish()[2], marker.retain) == (b"marker", False)


@pytest.mark.parametrize("qos", [1, 2])
def test_unacknowledged_messages_are_resent_on_reconnect_with_session_present(
    platform: Platform, clients: list[RawClient], qos: int
) -> None:
    # MQTT-4.4.0-1 (resend with DUP) and MQTT-3.2.2-2 (session present): the Paho interoperability
    # test "redelivery on reconnect" that stock amqtt 0.12.1 fails.
    topic, name = _topic(), f"persistent-{uuid.uuid4().hex[:8]}"
    subscriber = _client(platform, clients, name, clean=False)
    assert not subscriber.session_present
    assert subscriber.subscribe(topic, 2) == 2
    publisher = _client(platform, clients, f"pub-{uuid.uuid4().hex[:8]}")
    publisher.publish(topic, b"unacked", qos)
    first = subscriber.read()
    assert (first.qos, first.dup, first.publish()[2]) == (qos, False, b"unacked")
    subscriber.close()  # gone without acknowledging
    publisher.publish(topic, b"while away", qos)
    back = _client(platform, clients, name, clean=False)
    assert back.session_present
    resent = back.read()
    assert (resent.qos, resent.dup, resent.publish()[2]) == (qos, True, b"unacked")
    assert resent.publish()[1] == first.publish()[1]  # the same packet identifier
    # Then what was published meanwhile (DUP or not, depending on whether the broker had
    # already written it to the dying connection when the socket closed).
    queued = back.read()
    assert (queued.qos, queued.publish()[2]) == (qos, b"while away")
    back.ack(resent)
    back.ack(queued)


def test_a_clean_session_starts_without_session_present(platform: Platform, clients: list[RawClient]) -> None:
    name = f"clean-{uuid.uuid4().hex[:8]}"
    persistent = _client(platform, clients, name, clean=False)
    assert persistent.subscribe(_topic(), 1) == 1
    persistent.close()
    assert not _client(platform, clients, name, clean=True).session_present


def test_at_most_max_inflight_unacknowledged_the_rest_wait_in_order(
    platform: Platform, clients: list[RawClient]
) -> None:
    # A slow device must not make the broker buffer without bound: beyond MAX_INFLIGHT
    # unacknowledged QoS 1 messages, the rest wait in the session and go out as acks arrive.
    extra = 5
    topic, marker_topic = _topic(), _topic()
    subscriber = _client(platform, clients, f"sub-{uuid.uuid4().hex[:8]}")
    assert subscriber.subscribe(topic, 1) == 1
    assert subscriber.subscribe(marker_topic, 0) == 0
    publisher = _client(platform, clients, f"pub-{uuid.uuid4().hex[:8]}")
    for index in range(MAX_INFLIGHT + extra):
        publisher.publish(topic, str(index).encode(), 1)
    publisher.publish(marker_topic, b"marker", 0)  # QoS 0 is not held back by the window
    window = [subscriber.read() for _ in range(MAX_INFLIGHT)]
    assert [packet.publish()[2] for packet in window] == [str(i).encode() for i in range(MAX_INFLIGHT)]
    marker = subscriber.read()
    assert (marker.publish()[0], marker.qos) == (marker_topic, 0)  # nothing beyond the window came first
    for packet in window[:extra]:
        subscriber.ack(packet)
    rest = [subscriber.read() for _ in range(extra)]
    assert [packet.publish()[2] for packet in rest] == [
        str(i).encode() for i in range(MAX_INFLIGHT, MAX_INFLIGHT + extra)
    ]


def test_qos0_to_a_client_that_stopped_reading_is_shed_then_resumes(
    platform: Platform, clients: list[RawClient]
) -> None:
    # QoS 0 promises at most once: for a client that does not read, the broker drops it
    # rather than buffer without bound, and delivers again once the client has caught up.
    # QoS 1 is never shed, so it marks how far the delivery got.
    shed_at_start = _shed(platform, "qos0_stalled")
    topic, marker_topic = _topic(), _topic()
    subscriber = _client(platform, clients, f"sub-{uuid.uuid4().hex[:8]}", receive_buffer=4096)
    assert subscriber.subscribe(topic, 0) == 0
    assert subscriber.subscribe(marker_topic, 1) == 1
    publisher = _client(platform, clients, f"pub-{uuid.uuid4().hex[:8]}")
    chunk = 64 * 1024
    flood = 4 * QOS0_HIGH_WATER // chunk  # four times what the broker will hold for it
    for index in range(flood):
        publisher.publish(topic, index.to_bytes(4, "big") + bytes(chunk), 0)
    publisher.publish(marker_topic, b"flood sent", 1)  # acknowledged: every flood message was routed

    def received_before_marker() -> list[int]:
        indexes = []
        while (packet := subscriber.read()).publish()[0] != marker_topic:
            payload = packet.publish()[2]
            assert (packet.qos, len(payload)) == (0, 4 + chunk)  # whole packets, never torn
            indexes.append(int.from_bytes(payload[:4], "big"))
        subscriber.ack(packet)
        return indexes

    survived = received_before_marker()
    assert 0 < len(survived) < flood
    assert survived == sorted(survived)  # dropped, never reordered
    assert _shed(platform, "qos0_stalled") == shed_at_start + flood - len(survived)  # counted, in /metrics
    for index in range(flood, flood + 10):
        publisher.publish(topic, index.to_bytes(4, "big") + bytes(chunk), 0)
    publisher.publish(marker_topic, b"caught up", 1)
    assert received_before_marker() == list(range(flood, flood + 10))
