"""MQTT over WebSocket on the platform's HTTP port: a Starlette endpoint feeding the broker.

Browsers (MQTT.js) and paho connect to ``/mqtt`` with the ``mqtt`` subprotocol; each
binary frame carries part of the MQTT byte stream, which is handed to the broker exactly
as a TCP stream would be, behind the same packet-size guard.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from amqtt.adapters import ReaderAdapter, WriterAdapter
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

if TYPE_CHECKING:
    import ssl

    from broker_plugins.broker import HubbubBroker

__all__ = ["MQTT_SUBPROTOCOL", "WebSocketBridge"]

logger = logging.getLogger(__name__)

MQTT_SUBPROTOCOL = "mqtt"


class _WebSocketReader(ReaderAdapter):
    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._buffer = bytearray()
        self._closed = False

    async def read(self, n: int = -1) -> bytes:
        while not self._closed and (len(self._buffer) < n or (n < 0 and not self._buffer)):
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._closed = True
            elif message.get("bytes") is not None:
                self._buffer.extend(message["bytes"])
            else:
                # MQTT over WebSocket is binary only [MQTT-6.0.0-1]: a text frame ends the connection.
                logger.info("closing MQTT WebSocket: text frame received")
                self._closed = True
        if len(self._buffer) < n:
            return b""  # amqtt turns an empty read into NoDataError: the connection is gone
        size = len(self._buffer) if n < 0 else n
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_some(self, limit: int) -> bytes:
        """What the next frame(s) brought, up to ``limit`` bytes; ``b""`` once closed."""
        data = await self.read(-1)  # waits for at least one frame's bytes, returns all buffered
        if len(data) > limit:
            self._buffer[:0] = data[limit:]
            data = data[:limit]
        return data

    def feed_eof(self) -> None:
        self._closed = True


class _WebSocketWriter(WriterAdapter):
    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._pending = bytearray()
        self._flush: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        self._pending.extend(data)

    def send_nowait(self, data: bytes) -> None:
        """Buffer ``data`` and schedule one flush for everything buffered until it runs."""
        self._pending.extend(data)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self.drain())

    def buffered(self) -> int:
        """Bytes not yet handed to the WebSocket."""
        return len(self._pending)

    async def drain(self) -> None:
        if self._pending and self._websocket.application_state == WebSocketState.CONNECTED:
            data = bytes(self._pending)
            self._pending.clear()
            try:
                await self._websocket.send_bytes(data)
            except (WebSocketDisconnect, RuntimeError, OSError):
                logger.debug("MQTT WebSocket closed while sending")

    def get_peer_info(self) -> tuple[str, int] | None:
        client = self._websocket.client
        return (client.host, client.port) if client else ("unknown", 0)

    def get_ssl_info(self) -> ssl.SSLObject | None:
        return None

    async def close(self) -> None:
        await self.drain()
        if self._websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self._websocket.close()
            except (RuntimeError, OSError):
                logger.debug("MQTT WebSocket already closed")


class WebSocketBridge:
    """A WebSocket endpoint that hands each connection to the broker's external listener."""

    def __init__(self, broker: HubbubBroker) -> None:
        self._broker = broker

    async def serve(self, websocket: WebSocket) -> None:
        """Accept with the ``mqtt`` subprotocol and run the MQTT session until it ends."""
        if MQTT_SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
            await websocket.close(code=1002, reason="the 'mqtt' subprotocol is required")
            return
        await websocket.accept(subprotocol=MQTT_SUBPROTOCOL)
        writer = _WebSocketWriter(websocket)
        await self._broker.websocket_connected(_WebSocketReader(websocket), writer)
        await writer.close()
