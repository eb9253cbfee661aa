"""The per-connection protocol handler: a batched reader loop and non-blocking delivery.

Stock amqtt 0.12.1, per connection and per packet, reads the fixed header one byte per
``await``, builds a packet object, starts a task for it, queues a PUBLISH for a second
loop in the broker, and on the way out awaits ``drain()`` after every packet and keeps a
task per QoS 1/2 delivery alive until its PUBACK arrives. This handler replaces that:

- ``_reader_loop`` reads whatever bytes have arrived, splits them into packets in one pass
  (``codec.next_packet``) and handles PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP and
  PINGREQ inline; SUBSCRIBE / UNSUBSCRIBE go to the broker (``Router``) in order. Only
  rare packets are still decoded with amqtt's classes.
- ``publish_nowait`` writes a PUBLISH into the transport buffer and, for QoS 1/2, records
  it in ``session.inflight_out``; the acknowledgement removes it. Nothing waits.
  At most ``MAX_INFLIGHT`` messages are unacknowledged per session; more wait in the
  session's queue (``session.retained_messages``, amqtt's queue for a disconnected
  session) and go out as acknowledgements come back, in order.
- on (re)connect, ``_retry_deliveries`` resends every unacknowledged PUBLISH with DUP set
  and every PUBREL [MQTT-4.4.0-1]; stock amqtt dropped them when the connection ended.
- an inbound QoS 2 PUBLISH is delivered on receipt, its packet id kept until PUBREL
  (the spec's "method B"), so a resent PUBLISH with that id is not delivered twice.
- keepalive: a client silent for 1.5 x its keepalive is disconnected [MQTT-3.1.2-24];
  stock amqtt never did (amqtt issue #308), so dead connections looked alive for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from amqtt.adapters import BufferReader
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt import packet_class
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.unsuback import UnsubackPacket
from amqtt.session import ApplicationMessage, IncomingApplicationMessage, OutgoingApplicationMessage

from broker_plugins.codec import (
    PINGRESP_PACKET,
    IncompletePacket,
    MalformedPacket,
    ack_packet,
    encode_publish,
    next_packet,
    parse_publish,
)
from broker_plugins.sessions import LightQueue
from broker_plugins.transport import FastReader, FastWriter, TcpWriter

if TYPE_CHECKING:
    from amqtt.session import Session

__all__ = [
    "MAX_INFLIGHT",
    "MAX_QUEUED",
    "HubbubProtocolHandler",
    "ProtocolViolation",
    "Router",
    "keepalive_deadline",
]

logger = logging.getLogger(__name__)

MAX_INFLIGHT = 1000  # unacknowledged QoS 1/2 messages per session before the rest queue
MAX_QUEUED = 10_000  # queued messages per session (offline, or beyond MAX_INFLIGHT) before dropping
QOS0_HIGH_WATER = 4 << 20  # bytes unsent to a client above which its QoS 0 messages are shed
READ_CHUNK = 1 << 16

_PUBLISH, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 3, 4, 5, 6, 7
_CONNECT, _SUBSCRIBE, _UNSUBSCRIBE, _PINGREQ, _DISCONNECT = 1, 8, 10, 12, 14


class ProtocolViolation(MQTTError):
    """The client broke the protocol: the connection is closed without a reply [MQTT-4.8.0-1]."""


class Router(Protocol):
    """What the handler hands to the broker."""

    def on_publish(
        self, handler: HubbubProtocolHandler, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Awaitable[None] | None:
        """A client's PUBLISH; ``None`` when handled already, else something to await first."""
        ...

    async def on_subscribe(
        self, handler: HubbubProtocolHandler, packet_id: int, topics: list[tuple[str, int]]
    ) -> None:
        """A SUBSCRIBE: subscribe, SUBACK (``handler.suback``), then retained messages."""
        ...

    async def on_unsubscribe(self, handler: HubbubProtocolHandler, packet_id: int, topics: list[str]) -> None:
        """An UNSUBSCRIBE: unsubscribe, then UNSUBACK (``handler.unsuback``)."""
        ...


def keepalive_deadline(keepalive_s: int) -> int:
    """Seconds of silence after which a client is gone: 1.5 x keepalive, rounded up (0 = never)."""
    return -(-keepalive_s * 3 // 2)


class HubbubProtocolHandler(BrokerProtocolHandler):
    """One client connection: reads packets in batches, delivers without waiting for acks."""

    router: Router | None = None
    _reader_stopped: asyncio.Event
    dropped = 0  # messages shed (QoS 0 to a stalled client, or a full queue), all connections

    def __init__(self, plugins_manager: Any, session: Session | None = None) -> None:  # noqa: ANN401
        # ProtocolHandler's fields without BrokerProtocolHandler's two asyncio.Queues (about
        # 5 KB per connection, unused: SUBSCRIBE and UNSUBSCRIBE come straight to the router).
        ProtocolHandler.__init__(self, plugins_manager, session)
        self._disconnect_waiter: asyncio.Future[Any] | None = None
        self._pending_subscriptions = LightQueue()
        self._pending_unsubscriptions = LightQueue()

    def _init_session(self, session: Session) -> None:
        """Attach ``session`` (amqtt's version also builds a ``LoggerAdapter`` per connection)."""
        self.session = session
        self.keepalive_timeout = session.keep_alive if session.keep_alive > 0 else None

    def handle_read_timeout(self) -> None:
        """Nothing heard for 1.5 x keepalive: the client is gone."""
        logger.info(
            "keepalive expired for device_id=%s; closing", self.session.client_id if self.session else None
        )
        if self.reader is not None:
            self.reader.feed_eof()

    async def start(self) -> None:
        """Start reading and resend what the session left unacknowledged (no keepalive write timer)."""
        if self.session is None or self.reader is None:
            raise AMQTTError("handler is not attached to a session")
        if self._disconnect_waiter is None or self._disconnect_waiter.done():
            self._disconnect_waiter = asyncio.get_running_loop().create_future()
        if self._reader_stopped.is_set():
            self._reader_stopped = asyncio.Event()
        self._reader_task = asyncio.create_task(self._reader_loop())
        await self._retry_deliveries()

    async def _retry_deliveries(self) -> None:
        """Resend unacknowledged PUBLISH (DUP=1) and PUBREL packets, in their original order."""
        session = self.session
        if session is None:
            return
        for message in list(session.inflight_out.values()):
            packet_id = message.packet_id
            if packet_id is None:
                continue
            if message.qos == 2 and message.pubrec_packet is not None:  # noqa: PLR2004 - QoS 2
                self._write(ack_packet(_PUBREL, packet_id))
            else:
                self._write(
                    encode_publish(message.topic, bytes(message.data), message.qos or 1, packet_id, dup=True)
                )

    # --- writing ---------------------------------------------------------------------------

    _pending: list[bytes] | None = None  # packets written during this turn of the event loop
    _congested = False  # the client's unsent bytes passed QOS0_HIGH_WATER when this turn began

    def _write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in one turn of the event loop leaves in one write.

        A fan-out of N messages to a client used to cost N system calls; a batch of them
        now costs one. Order is kept: every packet the handler sends goes through here.
        """
        pending = self._pending
        if pending is None:
            self._pending = [data]
            _OUTPUT.mark(self)
        else:
            pending.append(data)

    def flush(self) -> None:
        """Hand what ``_write`` queued to the transport."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        writer = self.writer
        if writer is None:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        if isinstance(writer, (TcpWriter, FastWriter)):  # TcpWriter first: a cheap check
            writer.send_nowait(data)
            self._congested = writer.buffered() > QOS0_HIGH_WATER
        else:
            writer.write(data)
            asyncio.get_running_loop().create_task(writer.drain())

    def write_qos0(self, packet: bytes) -> None:
        """Send an already encoded QoS 0 PUBLISH (shared by every recipient of a fan-out).

        Shed while the client is not reading (unsent bytes above ``QOS0_HIGH_WATER``): QoS 0
        promises at most once, and buffering without bound would let one stalled client
        exhaust the broker's memory.
        """
        if self._congested:
            # Looked at again only while congested (and at each flush): a client that caught
            # up must not stay shed until some other packet happens to be written to it.
            self._congested = self._unsent() > QOS0_HIGH_WATER
            if self._congested:
                HubbubProtocolHandler.dropped += 1
                return
        self._write(packet)

    def _unsent(self) -> int:
        writer = self.writer
        return writer.buffered() if isinstance(writer, (TcpWriter, FastWriter)) else 0

    async def stop(self) -> None:
        """Flush what is queued, then amqtt's stop (which closes the writer)."""
        self.flush()
        await super().stop()

    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Send a PUBLISH at ``qos`` without waiting; QoS 1/2 stay in flight until acknowledged."""
        session = self.session
        if session is None:
            return
        if not qos:
            self.write_qos0(encode_publish(topic, payload, 0, None, retain))
            return
        if len(session.inflight_out) >= MAX_INFLIGHT or not session.retained_messages.empty():
            queue_message(session, topic, payload, qos, retain)
            return
        self._send_tracked(session, topic, payload, qos, retain)

    def _send_tracked(self, session: Session, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        packet_id = session.next_packet_id
        message = OutgoingApplicationMessage(packet_id, topic, qos, payload, retain)
        session.inflight_out[packet_id] = message
        self._write(encode_publish(topic, payload, qos, packet_id, retain))

    def flush_queue(self) -> None:
        """Send queued messages while the in-flight window has room (after acks, on reconnect)."""
        session = self.session
        if session is None:
            return
        queue = session.retained_messages
        while not queue.empty() and len(session.inflight_out) < MAX_INFLIGHT:
            message = queue.get_nowait()
            qos = message.qos or 0
            if qos:
                self._send_tracked(session, message.topic, bytes(message.data), qos, message.retain)
            else:
                self.write_qos0(encode_publish(message.topic, bytes(message.data), 0, None, message.retain))

    def suback(self, packet_id: int, return_codes: list[int]) -> None:
        """SUBACK, written at once."""
        self._write(SubackPacket.build(packet_id, return_codes).to_bytes())

    def unsuback(self, packet_id: int) -> None:
        """UNSUBACK, written at once."""
        self._write(UnsubackPacket.build(packet_id).to_bytes())

    # --- reading ---------------------------------------------------------------------------

    async def _reader_loop(self) -> None:
        session, reader = self.session, self.reader
        if session is None or reader is None:
            raise AMQTTError("handler is not attached to a session")
        read = reader.read_some if isinstance(reader, FastReader) else _exact_reader(reader)
        watchdog = _Watchdog(session.keep_alive)
        clock = asyncio.get_running_loop().time
        buffer = b""
        try:
            while True:  # until the stream ends, the client leaves or breaks the protocol
                data = await read(READ_CHUNK)
                if not data:
                    break
                watchdog.busy = True  # handling may wait (a full persister queue): not silence
                buffer = buffer + data if buffer else data
                consumed, leave = await self._handle_buffer(buffer)
                watchdog.busy = False
                watchdog.heard_at = clock()
                buffer = buffer[consumed:]
                if leave:
                    break
        except (ProtocolViolation, MalformedPacket, AMQTTError, MQTTError, NoDataError) as exc:
            logger.info("closing device_id=%s: %s", session.client_id, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if watchdog.expired:
                self.handle_read_timeout()
        finally:
            watchdog.stop()
            await self.handle_connection_closed()
            self._reader_stopped.set()
            await self.stop()

    async def _handle_buffer(self, buffer: bytes) -> tuple[int, bool]:
        """Handle every complete packet in ``buffer``: (bytes consumed, whether to stop reading)."""
        position = 0
        for _ in range(len(buffer)):  # each round consumes at least two bytes
            try:
                first, start, end = next_packet(buffer, position)
            except IncompletePacket:
                break
            position = end
            packet_type = first >> 4
            if packet_type == _PUBLISH:
                pending = self._on_publish(first & 0x0F, buffer[start:end])
                if pending is not None:
                    await pending
            elif packet_type == _PUBACK:
                self._acknowledged(buffer[start:end])
            elif packet_type == _PINGREQ:
                self._write(PINGRESP_PACKET)
            elif packet_type == _DISCONNECT:
                await self.handle_disconnect(None if end - start else _disconnect_packet())
                return position, True
            else:
                await self._on_other(packet_type, first, buffer[start:end])
        return position, False

    def _on_publish(self, flags: int, body: bytes) -> Awaitable[None] | None:
        qos = (flags >> 1) & 0x03
        if qos == 3:  # noqa: PLR2004 - reserved
            raise ProtocolViolation("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
        topic, packet_id, payload = parse_publish(flags, body)
        session, router = self.session, self.router
        if session is None or router is None:
            raise AMQTTError("handler has no session or router")
        if qos == 2:  # noqa: PLR2004
            if packet_id in session.inflight_in:  # a resend of one delivered already
                self._write(ack_packet(_PUBREC, packet_id or 0))
                return None
            session.inflight_in[packet_id] = IncomingApplicationMessage(
                packet_id, topic, 2, b"", retain=False
            )
        elif not qos and flags & 0x08:
            raise ProtocolViolation("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")
        pending = router.on_publish(self, topic, payload, qos, bool(flags & 0x01))
        if pending is not None:
            return self._acknowledge_after(pending, qos, packet_id)
        if qos:
            self._write(ack_packet(_PUBACK if qos == 1 else _PUBREC, packet_id or 0))
        return None

    async def _acknowledge_after(self, pending: Awaitable[None], qos: int, packet_id: int | None) -> None:
        await pending
        if qos:
            self._write(ack_packet(_PUBACK if qos == 1 else _PUBREC, packet_id or 0))

    def _acknowledged(self, body: bytes) -> None:
        """PUBACK: the QoS 1 delivery is done; make room for queued ones."""
        session = self.session
        if session is None or len(body) < 2:  # noqa: PLR2004
            return
        session.inflight_out.pop((body[0] << 8) | body[1], None)
        if not session.retained_messages.empty():
            self.flush_queue()

    async def _on_other(  # noqa: C901 - one flat dispatch over the rare packet types
        self, packet_type: int, first: int, body: bytes
    ) -> None:
        session, router = self.session, self.router
        if session is None or router is None:
            raise AMQTTError("handler has no session or router")
        packet_id = (body[0] << 8) | body[1] if len(body) >= 2 else 0  # noqa: PLR2004
        if packet_type == _PUBREC:
            message = session.inflight_out.get(packet_id)
            if message is not None:
                message.pubrec_packet = True
            self._write(ack_packet(_PUBREL, packet_id))
        elif packet_type == _PUBREL:
            session.inflight_in.pop(packet_id, None)
            self._write(ack_packet(_PUBCOMP, packet_id))
        elif packet_type == _PUBCOMP:
            session.inflight_out.pop(packet_id, None)
            if not session.retained_messages.empty():
                self.flush_queue()
        elif packet_type in {_SUBSCRIBE, _UNSUBSCRIBE}:
            header = MQTTFixedHeader(packet_type, first & 0x0F, len(body))
            packet = await packet_class(header).from_stream(BufferReader(body), fixed_header=header)
            if packet.variable_header is None or packet.payload is None:
                raise ProtocolViolation("SUBSCRIBE/UNSUBSCRIBE without payload")
            if packet_type == _SUBSCRIBE:
                await router.on_subscribe(self, packet.variable_header.packet_id, packet.payload.topics)
            else:
                await router.on_unsubscribe(self, packet.variable_header.packet_id, packet.payload.topics)
        elif packet_type == _CONNECT:
            raise ProtocolViolation("second CONNECT [MQTT-3.1.0-2]")
        elif packet_type in {0, 15}:
            raise ProtocolViolation("reserved packet type")
        # CONNACK, SUBACK, UNSUBACK, PINGRESP from a client mean nothing to a server: ignored.


class _Watchdog:
    """Cancels the current task (a reader loop) once nothing was heard for ``deadline_s`` (0: never).

    The reader only stamps ``heard_at`` once it has handled what it read, and sets ``busy``
    while handling it; the timer, due a deadline after the last stamp it saw, re-arms itself
    for the remainder whenever something arrived meanwhile, and for a whole deadline while
    the reader is busy (it is not reading, so silence cannot be told).
    An ``asyncio.timeout`` around every read had cost a fifth of the broker's event loop.
    """

    def __init__(self, deadline_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.heard_at = loop.time()
        self.busy = False
        self.expired = False
        self._deadline_s = deadline_s
        self._task = asyncio.current_task()
        self._timer = loop.call_at(self.heard_at + deadline_s, self._check) if deadline_s > 0 else None

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._deadline_s if self.busy else self.heard_at + self._deadline_s
        if due > loop.time():
            self._timer = loop.call_at(due, self._check)
        elif self._task is not None:
            self.expired = True
            self._task.cancel()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.expired and self._task is not None:
            self._task.uncancel()  # the expiry was handled: later awaits must not see it


class _OutputBatch:
    """Handlers with queued output, flushed together once the event loop's current turn ends."""

    def __init__(self) -> None:
        self._dirty: list[HubbubProtocolHandler] = []

    def mark(self, handler: HubbubProtocolHandler) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty.append(handler)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for handler in dirty:
            handler.flush()


_OUTPUT = _OutputBatch()  # one per process: the broker runs one event loop


def queue_message(session: Session, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
    """Keep a message for ``session`` until it can be sent; ``False`` if its queue is full."""
    queue = session.retained_messages
    if queue.qsize() >= MAX_QUEUED:
        HubbubProtocolHandler.dropped += 1
        return False
    message: ApplicationMessage = OutgoingApplicationMessage(None, topic, qos, payload, retain)
    queue.put_nowait(message)
    return True


def _exact_reader(reader: object) -> _Read:
    """For a reader without ``read_some``: one byte at a time (correct, slow; not used by the broker)."""

    async def read(limit: int) -> bytes:
        del limit
        data: bytes = await reader.read(1)  # type: ignore[attr-defined]
        return data

    return read


def _disconnect_packet() -> object:
    from amqtt.mqtt.disconnect import DisconnectPacket  # noqa: PLC0415 - rare path

    return DisconnectPacket()


class _Read(Protocol):
    def __call__(self, limit: int) -> Awaitable[bytes]: ...
