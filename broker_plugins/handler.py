"""The per-connection protocol handler: fed bytes, it handles packets; it delivers without waiting.

Stock amqtt 0.12.1 reads a byte per ``await``, starts a task per packet, awaits ``drain()``
after each and keeps a task per QoS 1/2 delivery until its PUBACK. This handler is the broker's own:

- it is an ``asyncio.Protocol``: on TCP the event loop calls ``data_received`` with whatever
  bytes arrived, and the WebSocket bridge calls the same three methods from its own loop.
  An idle connection holds no task, no coroutine frame and no stream object: its
  transport, this slotted object and its session are all there is.
- ``data_received`` splits the bytes into packets in one pass (``codec.next_packet``) and
  handles every packet type after CONNECT itself; PUBLISH, SUBSCRIBE and UNSUBSCRIBE go to
  the broker (``Router``) in order, most answered at once (a device's SUBSCRIBE to its inbox
  among them). One that must be waited for (a SUBSCRIBE's lookup of who may see whose
  presence, a cluster node's publish until the stream accepted it) is the connection's step:
  reading pauses until it is done, then the rest is handled, so packets stay in order and a
  client cannot pile up work. A step handed over as a future costs no task; a coroutine, one.
- before its CONNECT is accepted, the bytes are kept until the CONNECT is complete (nearly
  always the first read), then handed to the broker (``Router.connect_received``), which
  accepts it at once when nothing must be asked of the account store, or returns a step.
  ``accept`` ends that phase. A connection must complete its CONNECT within the broker's
  ``connect_timeout_s`` (watched by the keepalive wheel: no timer per connecting socket).
- ``publish_nowait`` writes a PUBLISH into the transport buffer and, for QoS 1/2, records
  it in the session (``session.track``); the acknowledgement removes it. Nothing waits.
  At most ``MAX_INFLIGHT`` messages are unacknowledged per session; more wait in the
  session's queue and go out as acknowledgements come back, in order.
- on (re)connect, ``accept`` resends every unacknowledged PUBLISH with DUP set and every
  PUBREL [MQTT-4.4.0-1]; stock amqtt dropped them when the connection ended.
- an inbound QoS 2 PUBLISH is delivered on receipt, its packet id kept until PUBREL
  (the spec's "method B"), so a resent PUBLISH with that id is not delivered twice.
- a silent client is disconnected (``keepalive.py``; stock amqtt never did, its issue #308), and a
  packet above the size limit is refused from its fixed header (``limits.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, cast

from amqtt.errors import MQTTError

from broker_plugins.codec import (
    PINGRESP_PACKET,
    MalformedPacket,
    ack_packet,
    connack_packet,
    encode_publish,
    parse_publish,
    parse_subscribe,
    parse_unsubscribe,
    suback_packet,
    unsuback_packet,
)
from broker_plugins.limits import NotConnect, next_packet_within
from broker_plugins.output import OUTPUT
from broker_plugins.qos_flows import PUBACK, PUBCOMP, PUBREC, PUBREL, answer_flow_packet, inbound_ack
from broker_plugins.router import ProtocolViolation, Router
from broker_plugins.sessions import MqttSession, Outgoing
from broker_plugins.transport import Link

if TYPE_CHECKING:
    from broker_plugins.keepalive import Watched

__all__ = ["MAX_INFLIGHT", "QOS0_HIGH_WATER", "ConnectionHandler"]

logger = logging.getLogger(__name__)

MAX_INFLIGHT = 1000  # unacknowledged QoS 1/2 messages per session before the rest queue
QOS0_HIGH_WATER = 4 << 20  # bytes unsent to a client above which its QoS 0 messages are shed
CONNECT_BACKLOG = 1 << 16  # bytes beyond a largest CONNECT buffered before it is accepted: reading pauses

_CONNECT, _PUBLISH = 1, 3
_SUBSCRIBE, _UNSUBSCRIBE, _PINGREQ, _DISCONNECT = 8, 10, 12, 14
_SUBSCRIBE_FLAGS = 0x02  # SUBSCRIBE, UNSUBSCRIBE and PUBREL have flags 0b0010 [MQTT-3.8.1-1]
_PUBACK_FIRST = PUBACK << 4  # the other packets from a client have flags 0 [MQTT-2.2.2-2]


class ConnectionHandler(asyncio.Protocol):
    """One client connection, from its first byte to its end; ``session`` once its CONNECT is accepted.

    Driven as any ``asyncio.Protocol`` is (``connection_made``, ``data_received``,
    ``connection_lost``): by the event loop on TCP, by ``websocket.py`` on WebSocket. It ends
    once (``_end``): by DISCONNECT (``clean``: no will), or by the socket closing, its
    keepalive expiring, a protocol error, or ``close`` (taken over, dropped, shut down).
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_congested",
        "_pending",
        "_session",
        "_step",
        "heard_at",
        "keepalive_slot",
        "link",
        "router",
    )

    link: Link  # set by ``connection_made``

    def __init__(self, router: Router) -> None:
        self.router = router
        self._session: MqttSession | None = None  # None until the CONNECT is accepted
        self.heard_at = 0.0  # time.monotonic() of the last bytes from the client
        self.keepalive_slot: set[Watched] | None = None
        self._buffer = b""  # the start of a packet not complete yet, or what came during a step
        self._step: asyncio.Future[None] | None = None  # what is waited for (after CONNECT, reading paused)
        self._pending: list[bytes] | None = None  # packets written during this turn of the event loop
        self._congested = False  # the client's unsent bytes passed QOS0_HIGH_WATER when this turn began
        self._closed = False

    # --- driven by the event loop (TCP) or the WebSocket bridge -----------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The connection is open: its CONNECT is due within the broker's ``connect_timeout_s``."""
        self.link = cast("Link", transport)
        self.heard_at = time.monotonic()
        router = self.router
        router.connection_made(self)
        if not self._closed:
            router.keepalive.watch(self)

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: handle every complete packet (the CONNECT first)."""
        if self._closed:
            return
        if self._session is None:  # before the CONNECT is accepted: silence is measured from the start
            self._buffer += data
            if self._step is None:
                self._connect_from_buffer()
            elif len(self._buffer) > self.router.max_packet_bytes + CONNECT_BACKLOG:
                self.link.pause_reading()
            return
        self.heard_at = time.monotonic()
        if self._step is not None:  # read before the pause took effect: handled after the step
            self._buffer += data
            return
        self._consume(self._buffer + data if self._buffer else data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket closed (whoever closed it)."""
        del exc
        self._end(clean=False)

    # --- its life ----------------------------------------------------------------------------------

    def accept(self, session: MqttSession, present: bool) -> None:
        """The CONNECT was accepted: CONNACK, what the session left unacknowledged, what it queued.

        Then the packets sent right behind the CONNECT are handled (after its step, if it had one).
        """
        self._session = session
        session.handler = self
        if self._closed:  # the connection ended while its CONNECT was being checked
            self.router.connection_ended(self, False)  # noqa: FBT003 - not clean
            return
        self._write(connack_packet(session_present=present, return_code=0))
        for message in session.unacknowledged():
            if message.qos == 2 and message.released:  # noqa: PLR2004 - QoS 2
                self._write(ack_packet(PUBREL, message.packet_id))
            else:
                self._write(
                    encode_publish(message.topic, message.payload, message.qos, message.packet_id, dup=True)
                )
        self.flush_queue()
        keepalive = self.router.keepalive
        keepalive.forget(self)  # the CONNECT's deadline
        self.heard_at = time.monotonic()
        keepalive.watch(self)
        if self._step is None:
            self.link.resume_reading()  # in case the backlog before the CONNACK paused it
            buffer, self._buffer = self._buffer, b""
            if buffer:
                self._consume(buffer)

    def close(self) -> None:
        """End the connection (the broker takes it over, drops it or shuts down), and what it awaits."""
        step = self._step
        self._end(clean=False)
        if step is not None and step is not asyncio.current_task():
            step.cancel()

    @property
    def session(self) -> MqttSession:
        """The session of the client id (from ``accept`` on)."""
        session = self._session
        if session is None:
            raise RuntimeError("no session before the CONNECT is accepted")
        return session

    @property
    def accepted(self) -> bool:
        """Whether its CONNECT was accepted (it has a session)."""
        return self._session is not None

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed

    @property
    def deadline(self) -> int:
        """Seconds of silence after which the client is gone (0: never); before it, the CONNECT's."""
        session = self._session
        return session.keep_alive if session is not None else self.router.connect_timeout_s

    @property
    def step(self) -> asyncio.Future[None] | None:
        """What the connection waits for, if anything (a CONNECT's check, a packet's handling)."""
        return self._step

    @property
    def busy(self) -> bool:
        """Whether a packet is being waited for (reading is paused: silence means nothing)."""
        return self._step is not None

    def expire(self) -> None:
        """The keepalive deadline passed in silence [MQTT-3.1.2-24], or the CONNECT's."""
        if self._session is None:
            logger.info("no CONNECT from %s in time; closing", self.remote())
        else:
            logger.info("keepalive expired for device_id=%s; closing", self._client_id())
        self._end(clean=False)

    def remote(self) -> str:
        """The client's "address:port" (for logs; "unknown:0" once it is gone)."""
        peer = self.link.get_extra_info("peername")
        if peer and len(peer) >= 2:  # noqa: PLR2004 - (host, port)
            return f"{peer[0]}:{peer[1]}"
        return "unknown:0"

    def refuse(self, return_code: int) -> None:
        """Refuse the CONNECT: CONNACK ``return_code``, then close."""
        self._write(connack_packet(session_present=False, return_code=return_code))
        self._end(clean=False)

    def _end(self, *, clean: bool) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        step = self._step
        # A packet's step ends with the connection; a CONNECT's runs on to ``accept``, which
        # reports the end of a device whose connection was reported already.
        if step is not None and self._session is not None and step is not asyncio.current_task():
            step.cancel()
        self.router.keepalive.forget(self)
        self.link.close()
        self.router.connection_ended(self, clean)

    def _client_id(self) -> str:
        session = self._session
        return session.client_id if session is not None else "(before CONNECT)"

    # --- writing ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in one turn of the event loop leaves in one write.

        A fan-out of N messages to a client used to cost N system calls; a batch of them
        now costs one. Order is kept: every packet the handler sends goes through here.
        """
        pending = self._pending
        if pending is None:
            self._pending = [data]
            OUTPUT.mark(self)
        else:
            pending.append(data)

    def flush(self) -> None:
        """Hand what ``_write`` queued to the transport (dropped once the connection ended)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        link = self.link
        if self._closed or link.is_closing():  # the transport may close before connection_lost
            return
        link.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self._congested = link.get_write_buffer_size() > QOS0_HIGH_WATER

    def write_qos0(self, packet: bytes) -> None:
        """Send an already encoded QoS 0 PUBLISH (shared by every recipient of a fan-out).

        Shed while the client is not reading (unsent bytes above ``QOS0_HIGH_WATER``): QoS 0
        promises at most once, and buffering without bound would let one stalled client
        exhaust the broker's memory.
        """
        if self._congested:
            # Looked at again only while congested (and at each flush): a client that caught
            # up must not stay shed until some other packet happens to be written to it.
            self._congested = self.link.get_write_buffer_size() > QOS0_HIGH_WATER
            if self._congested:
                self.router.shed.qos0_stalled += 1
                return
        self._write(packet)

    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Send a PUBLISH at ``qos`` without waiting; QoS 1/2 stay in flight until acknowledged."""
        if not qos:
            self.write_qos0(encode_publish(topic, payload, 0, None, retain))
            return
        session = self.session
        if session.in_flight() >= MAX_INFLIGHT or session.has_queued():
            if not session.enqueue(Outgoing(topic, payload, qos, retain=retain)):
                self.router.shed.queue_full += 1
            return
        self._send_tracked(session, Outgoing(topic, payload, qos, retain=retain))

    def _send_tracked(self, session: MqttSession, message: Outgoing) -> None:
        packet_id = session.track(message)
        self._write(encode_publish(message.topic, message.payload, message.qos, packet_id, message.retain))

    def flush_queue(self) -> None:
        """Send queued messages while the in-flight window has room (after acks, on reconnect)."""
        session = self.session
        while session.has_queued() and session.in_flight() < MAX_INFLIGHT:
            self._send_tracked(session, session.dequeue())

    def suback(self, packet_id: int, return_codes: list[int]) -> None:
        """SUBACK, written at once."""
        self._write(suback_packet(packet_id, return_codes))

    def unsuback(self, packet_id: int) -> None:
        """UNSUBACK, written at once."""
        self._write(unsuback_packet(packet_id))

    # --- reading ---------------------------------------------------------------------------

    def _connect_from_buffer(self) -> None:
        """Hand the CONNECT to the broker once its bytes are all here; the first packet must be one."""
        buffer = self._buffer
        try:
            if buffer[0] >> 4 != _CONNECT:
                raise NotConnect(f"first packet has type {buffer[0] >> 4}, not CONNECT [MQTT-3.1.0-1]")
            packet = next_packet_within(buffer, 0, self.router.max_packet_bytes)
        except MalformedPacket as exc:  # PacketTooLarge and NotConnect are ones too
            logger.info("refused connection from %s: %s", self.remote(), exc)
            self._end(clean=False)
            return
        if packet is None:
            return
        _, start, end = packet
        self._buffer = buffer[end:]
        try:
            step = self.router.connect_received(self, buffer[start:end])
        except Exception as exc:  # noqa: BLE001 - a bug must cost only this connection (and is logged)
            self._end_on(exc)
            return
        if step is not None and not self._closed:
            self._wait_for(step)

    def _consume(self, buffer: bytes) -> None:
        """Handle the packets in ``buffer``; keep an incomplete one; start a step if one must wait."""
        try:
            position, step = self._handle_buffer(buffer)
        except Exception as exc:  # noqa: BLE001 - a bug must cost only this connection (and is logged)
            self._end_on(exc)
            return
        if self._closed:
            return
        self._buffer = buffer[position:] if position else buffer
        if step is not None:
            self.link.pause_reading()
            self._wait_for(step)

    def _end_on(self, exc: BaseException) -> None:
        """Close the connection a packet's handling failed on: a client's fault, or a bug (traceback)."""
        if isinstance(exc, MalformedPacket | MQTTError):  # ProtocolViolation is an MQTTError
            logger.info("closing device_id=%s: %s", self._client_id(), exc)
        else:
            logger.error("unexpected error handling device_id=%s; closing", self._client_id(), exc_info=exc)
        self._end(clean=False)

    def _wait_for(self, step: Awaitable[None]) -> None:
        """Make ``step`` the connection's step: a future as it is (no task), a coroutine run by a task."""
        # A future as it is (the connect path answers with one): ``ensure_future`` is interpreted code.
        future = step if isinstance(step, asyncio.Future) else asyncio.ensure_future(step)
        self._step = future
        future.add_done_callback(self._step_done)

    def _step_done(self, step: asyncio.Future[None]) -> None:
        """The step ended: handle what came during it, and read again (a failure closes the connection)."""
        if step.cancelled():  # the connection was closed
            return
        failed = step.exception()
        if failed is not None:  # a bug must cost only this connection (and is logged)
            self._end_on(failed)
            return
        self._step = None
        if self._closed:
            return
        if self._session is None:  # a CONNECT's step that neither accepted nor closed: a bug
            self._end_on(RuntimeError("a CONNECT was neither accepted nor refused"))
            return
        self.heard_at = time.monotonic()  # busy until now: silence counts from here
        buffer, self._buffer = self._buffer, b""
        if buffer:
            self._consume(buffer)
        # Not ``self._step``: compiled, it is checked to be still the None set above (mypy's narrowing).
        if not self.busy and not self._closed:
            self.link.resume_reading()

    def _handle_buffer(self, buffer: bytes) -> tuple[int, Awaitable[None] | None]:
        """Handle complete packets until one must be waited for: (bytes consumed, what to wait for)."""
        position = 0
        limit = self.router.max_packet_bytes
        size = len(buffer)
        # Each round consumes at least two bytes. A read nearly always ends with a packet: stopping
        # there rather than asking for the next one spares an ``IncompletePacket`` raised per read.
        while position < size:
            packet = next_packet_within(buffer, position, limit)
            if packet is None:
                break
            first, start, end = packet
            position = end
            packet_type = first >> 4
            if packet_type == _PUBLISH:
                step = self._on_publish(first & 0x0F, buffer[start:end])
                if step is not None:
                    return position, step
            elif first == _PUBACK_FIRST:
                self._acknowledged(buffer[start:end])
            elif first == _PINGREQ << 4:
                self._write(PINGRESP_PACKET)
            elif first == _DISCONNECT << 4:
                self._end(clean=True)
            else:
                step = self._on_other(packet_type, first, buffer[start:end])
                if step is not None:
                    return position, step
            if self._closed:
                break
        return position, None

    def _on_publish(self, flags: int, body: bytes) -> Awaitable[None] | None:
        qos = (flags >> 1) & 0x03
        if qos == 3:  # noqa: PLR2004 - reserved
            raise ProtocolViolation("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
        topic, packet_id, payload = parse_publish(flags, body)
        if qos == 2:  # noqa: PLR2004
            if not self.session.receive_qos2(packet_id or 0):  # a resend of one delivered already
                self._write(inbound_ack(qos, packet_id or 0))
                return None
        elif not qos and flags & 0x08:
            raise ProtocolViolation("DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")
        pending = self.router.on_publish(self, topic, payload, qos, bool(flags & 0x01))
        if pending is not None:
            return self._acknowledge_after(pending, qos, packet_id)
        if qos:
            self._write(inbound_ack(qos, packet_id or 0))
        return None

    async def _acknowledge_after(self, pending: Awaitable[None], qos: int, packet_id: int | None) -> None:
        await pending
        if qos:
            self._write(inbound_ack(qos, packet_id or 0))

    def _acknowledged(self, body: bytes) -> None:
        """PUBACK: the QoS 1 delivery is done; make room for queued ones."""
        if len(body) < 2:  # noqa: PLR2004
            return
        session = self.session
        session.acknowledge((body[0] << 8) | body[1])
        if session.has_queued():
            self.flush_queue()

    def _on_other(self, packet_type: int, first: int, body: bytes) -> Awaitable[None] | None:
        session = self.session
        flags = first & 0x0F
        if flags != (_SUBSCRIBE_FLAGS if packet_type in {PUBREL, _SUBSCRIBE, _UNSUBSCRIBE} else 0):
            raise ProtocolViolation(f"packet type {packet_type} with flags {flags:#06b} [MQTT-2.2.2-2]")
        packet_id = (body[0] << 8) | body[1] if len(body) >= 2 else 0  # noqa: PLR2004
        if packet_type in {PUBREC, PUBREL, PUBCOMP}:
            answer = answer_flow_packet(session, packet_type, packet_id)
            if answer is not None:
                self._write(answer)
            elif session.has_queued():  # a PUBCOMP made room
                self.flush_queue()
        elif packet_type == _SUBSCRIBE:
            packet_id, asked = parse_subscribe(body)
            return self.router.on_subscribe(self, packet_id, asked)
        elif packet_type == _UNSUBSCRIBE:
            packet_id, filters = parse_unsubscribe(body)
            self.router.on_unsubscribe(self, packet_id, filters)
        elif packet_type == _CONNECT:
            raise ProtocolViolation("second CONNECT [MQTT-3.1.0-2]")
        elif packet_type in {0, 15}:
            raise ProtocolViolation("reserved packet type")
        # CONNACK, SUBACK, UNSUBACK, PINGRESP from a client mean nothing to a server: ignored.
        return None
