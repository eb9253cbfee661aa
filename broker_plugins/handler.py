"""The per-connection protocol handler: a batched reader loop and non-blocking delivery.

Stock amqtt 0.12.1, per connection and per packet, reads the fixed header one byte per
``await``, builds a packet object, starts a task for it, queues a PUBLISH for a second
loop in the broker, and on the way out awaits ``drain()`` after every packet and keeps a
task per QoS 1/2 delivery alive until its PUBACK arrives. This handler is the broker's
own (it no longer subclasses amqtt's ``BrokerProtocolHandler``):

- ``_reader_loop`` reads whatever bytes have arrived, splits them into packets in one pass
  (``codec.next_packet``) and handles every packet type after CONNECT itself; PUBLISH,
  SUBSCRIBE and UNSUBSCRIBE go to the broker (``Router``) in order.
- ``publish_nowait`` writes a PUBLISH into the transport buffer and, for QoS 1/2, records
  it in ``session.inflight_out``; the acknowledgement removes it. Nothing waits.
  At most ``MAX_INFLIGHT`` messages are unacknowledged per session; more wait in the
  session's queue and go out as acknowledgements come back, in order.
- on (re)connect, ``start`` resends every unacknowledged PUBLISH with DUP set and every
  PUBREL [MQTT-4.4.0-1]; stock amqtt dropped them when the connection ended.
- an inbound QoS 2 PUBLISH is delivered on receipt, its packet id kept until PUBREL
  (the spec's "method B"), so a resent PUBLISH with that id is not delivered twice.
- keepalive: a client silent for 1.5 x its keepalive is disconnected [MQTT-3.1.2-24];
  stock amqtt never did (amqtt issue #308), so dead connections looked alive for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from contextlib import suppress
from typing import Protocol

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import AMQTTError, MQTTError, NoDataError

from broker_plugins.codec import (
    PINGRESP_PACKET,
    IncompletePacket,
    MalformedPacket,
    ack_packet,
    connack_packet,
    encode_publish,
    next_packet,
    parse_publish,
    parse_subscribe,
    parse_unsubscribe,
    suback_packet,
    unsuback_packet,
)
from broker_plugins.metrics import ShedCounts
from broker_plugins.sessions import MqttSession, Outgoing
from broker_plugins.transport import FastReader, FastWriter, TcpWriter

__all__ = [
    "MAX_INFLIGHT",
    "QOS0_HIGH_WATER",
    "ConnectionHandler",
    "ProtocolViolation",
    "Router",
    "keepalive_deadline",
]

logger = logging.getLogger(__name__)

MAX_INFLIGHT = 1000  # unacknowledged QoS 1/2 messages per session before the rest queue
QOS0_HIGH_WATER = 4 << 20  # bytes unsent to a client above which its QoS 0 messages are shed
READ_CHUNK = 1 << 16

_CONNECT, _PUBLISH, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 1, 3, 4, 5, 6, 7
_SUBSCRIBE, _UNSUBSCRIBE, _PINGREQ, _DISCONNECT = 8, 10, 12, 14
_SUBSCRIBE_FLAGS = 0x02  # SUBSCRIBE, UNSUBSCRIBE and PUBREL have flags 0b0010 [MQTT-3.8.1-1]
_PUBACK_FIRST = _PUBACK << 4  # the other packets from a client have flags 0 [MQTT-2.2.2-2]


class ProtocolViolation(MQTTError):
    """The client broke the protocol: the connection is closed without a reply [MQTT-4.8.0-1]."""


class Router(Protocol):
    """What the handler hands to the broker, and where it counts what it sheds."""

    shed: ShedCounts

    def on_publish(
        self, handler: ConnectionHandler, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Awaitable[None] | None:
        """A client's PUBLISH; ``None`` when handled already, else something to await first."""
        ...

    async def on_subscribe(
        self, handler: ConnectionHandler, packet_id: int, topics: list[tuple[str, int]]
    ) -> None:
        """A SUBSCRIBE: subscribe, SUBACK (``handler.suback``), then retained messages."""
        ...

    async def on_unsubscribe(self, handler: ConnectionHandler, packet_id: int, topics: list[str]) -> None:
        """An UNSUBSCRIBE: unsubscribe, then UNSUBACK (``handler.unsuback``)."""
        ...


def keepalive_deadline(keepalive_s: int) -> int:
    """Seconds of silence after which a client is gone: 1.5 x keepalive, rounded up (0 = never)."""
    return -(-keepalive_s * 3 // 2)


class ConnectionHandler:
    """One client connection: reads packets in batches, delivers without waiting for acks.

    ``ended`` resolves when the connection ends: ``True`` after a DISCONNECT packet (no
    will), ``False`` otherwise (socket closed, keepalive, protocol error, closed by the broker).
    ``finished`` resolves once the broker is done with it (will, session, presence).
    """

    __slots__ = (
        "_congested",
        "_pending",
        "_reader_task",
        "ended",
        "finished",
        "reader",
        "router",
        "session",
        "writer",
    )

    def __init__(
        self, session: MqttSession, reader: ReaderAdapter, writer: WriterAdapter, router: Router
    ) -> None:
        self.session = session
        self.reader = reader
        self.writer = writer
        self.router = router
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[bool] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self._pending: list[bytes] | None = None  # packets written during this turn of the event loop
        self._congested = False  # the client's unsent bytes passed QOS0_HIGH_WATER when this turn began
        self._reader_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading; resend what the session left unacknowledged, then what was queued."""
        self._reader_task = asyncio.create_task(self._reader_loop())
        for message in list(self.session.inflight_out.values()):
            if message.qos == 2 and message.released:  # noqa: PLR2004 - QoS 2
                self._write(ack_packet(_PUBREL, message.packet_id))
            else:
                self._write(
                    encode_publish(message.topic, message.payload, message.qos, message.packet_id, dup=True)
                )
        self.flush_queue()

    def close(self) -> None:
        """End the connection (the broker takes it over or shuts down); ``ended`` says when."""
        task = self._reader_task
        if task is not None and not task.done():
            task.cancel()
        elif not self.ended.done():
            self.ended.set_result(False)

    async def stop(self) -> None:
        """Flush what is queued, stop reading, close the writer."""
        self.flush()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        with suppress(ConnectionError, OSError, TimeoutError):
            await self.writer.close()

    # --- writing ---------------------------------------------------------------------------

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
                self.router.shed.qos0_stalled += 1
                return
        self._write(packet)

    def _unsent(self) -> int:
        writer = self.writer
        return writer.buffered() if isinstance(writer, (TcpWriter, FastWriter)) else 0

    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Send a PUBLISH at ``qos`` without waiting; QoS 1/2 stay in flight until acknowledged."""
        if not qos:
            self.write_qos0(encode_publish(topic, payload, 0, None, retain))
            return
        session = self.session
        if len(session.inflight_out) >= MAX_INFLIGHT or session.has_queued():
            if not session.enqueue(Outgoing(topic, payload, qos, retain=retain)):
                self.router.shed.queue_full += 1
            return
        self._send_tracked(Outgoing(topic, payload, qos, retain=retain))

    def _send_tracked(self, message: Outgoing) -> None:
        session = self.session
        message.packet_id = packet_id = session.next_packet_id()
        session.inflight_out[packet_id] = message
        self._write(encode_publish(message.topic, message.payload, message.qos, packet_id, message.retain))

    def flush_queue(self) -> None:
        """Send queued messages while the in-flight window has room (after acks, on reconnect)."""
        session = self.session
        while session.has_queued() and len(session.inflight_out) < MAX_INFLIGHT:
            self._send_tracked(session.dequeue())

    def connack(self, session_present: bool) -> None:
        """CONNACK (accepted), written at once."""
        self._write(connack_packet(session_present=session_present, return_code=0))

    def suback(self, packet_id: int, return_codes: list[int]) -> None:
        """SUBACK, written at once."""
        self._write(suback_packet(packet_id, return_codes))

    def unsuback(self, packet_id: int) -> None:
        """UNSUBACK, written at once."""
        self._write(unsuback_packet(packet_id))

    # --- reading ---------------------------------------------------------------------------

    async def _reader_loop(self) -> None:
        session, reader = self.session, self.reader
        read = reader.read_some if isinstance(reader, FastReader) else _exact_reader(reader)
        watchdog = _Watchdog(session.keep_alive)
        clock = asyncio.get_running_loop().time
        buffer = b""
        clean = False
        try:
            while True:  # until the stream ends, the client leaves or breaks the protocol
                data = await read(READ_CHUNK)
                if not data:
                    break
                watchdog.busy = True  # handling may wait (a full persister queue): not silence
                buffer = buffer + data if buffer else data
                consumed, clean = await self._handle_buffer(buffer)
                watchdog.busy = False
                watchdog.heard_at = clock()
                buffer = buffer[consumed:]
                if clean:
                    break
        except (ProtocolViolation, MalformedPacket, AMQTTError, MQTTError, NoDataError) as exc:
            logger.info("closing device_id=%s: %s", session.client_id, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if watchdog.expired:
                logger.info("keepalive expired for device_id=%s; closing", session.client_id)
        except Exception:
            # A bug must cost only this connection, and be seen: unhandled here, the error
            # would wait in the task until garbage collection to be reported, if ever.
            logger.exception("unexpected error reading from device_id=%s; closing", session.client_id)
        finally:
            watchdog.stop()
            if not self.ended.done():
                self.ended.set_result(clean)

    async def _handle_buffer(self, buffer: bytes) -> tuple[int, bool]:
        """Handle every complete packet in ``buffer``: (bytes consumed, whether a DISCONNECT came)."""
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
            elif first == _PUBACK_FIRST:
                self._acknowledged(buffer[start:end])
            elif first == _PINGREQ << 4:
                self._write(PINGRESP_PACKET)
            elif first == _DISCONNECT << 4:
                return position, True
            else:
                await self._on_other(packet_type, first, buffer[start:end])
        return position, False

    def _on_publish(self, flags: int, body: bytes) -> Awaitable[None] | None:
        qos = (flags >> 1) & 0x03
        if qos == 3:  # noqa: PLR2004 - reserved
            raise ProtocolViolation("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
        topic, packet_id, payload = parse_publish(flags, body)
        if qos == 2:  # noqa: PLR2004
            inflight_in = self.session.inflight_in
            if packet_id in inflight_in:  # a resend of one delivered already
                self._write(ack_packet(_PUBREC, packet_id or 0))
                return None
            inflight_in[packet_id or 0] = None
        elif not qos and flags & 0x08:
            raise ProtocolViolation("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")
        pending = self.router.on_publish(self, topic, payload, qos, bool(flags & 0x01))
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
        if len(body) < 2:  # noqa: PLR2004
            return
        session = self.session
        session.inflight_out.pop((body[0] << 8) | body[1], None)
        if session.has_queued():
            self.flush_queue()

    async def _on_other(  # noqa: C901 - one flat dispatch over the rare packet types
        self, packet_type: int, first: int, body: bytes
    ) -> None:
        session = self.session
        flags = first & 0x0F
        if flags != (_SUBSCRIBE_FLAGS if packet_type in {_PUBREL, _SUBSCRIBE, _UNSUBSCRIBE} else 0):
            raise ProtocolViolation(f"packet type {packet_type} with flags {flags:#06b} [MQTT-2.2.2-2]")
        packet_id = (body[0] << 8) | body[1] if len(body) >= 2 else 0  # noqa: PLR2004
        if packet_type == _PUBREC:
            message = session.inflight_out.get(packet_id)
            if message is not None:
                message.released = True
            self._write(ack_packet(_PUBREL, packet_id))
        elif packet_type == _PUBREL:
            session.inflight_in.pop(packet_id, None)
            self._write(ack_packet(_PUBCOMP, packet_id))
        elif packet_type == _PUBCOMP:
            session.inflight_out.pop(packet_id, None)
            if session.has_queued():
                self.flush_queue()
        elif packet_type == _SUBSCRIBE:
            packet_id, asked = parse_subscribe(body)
            await self.router.on_subscribe(self, packet_id, asked)
        elif packet_type == _UNSUBSCRIBE:
            packet_id, filters = parse_unsubscribe(body)
            await self.router.on_unsubscribe(self, packet_id, filters)
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
        self._dirty: list[ConnectionHandler] = []

    def mark(self, handler: ConnectionHandler) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty.append(handler)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for handler in dirty:
            handler.flush()


_OUTPUT = _OutputBatch()  # one per process: the broker runs one event loop


def _exact_reader(reader: ReaderAdapter) -> _Read:
    """For a reader without ``read_some``: one byte at a time (correct, slow; not used by the broker)."""

    async def read(limit: int) -> bytes:
        del limit
        data: bytes = await reader.read(1)
        return data

    return read


class _Read(Protocol):
    def __call__(self, limit: int) -> Awaitable[bytes]: ...
