"""MQTT over WebSocket on the platform's HTTP port: a Starlette endpoint driving the broker's handler.

Browsers (MQTT.js) and paho connect to ``/mqtt`` with the ``mqtt`` subprotocol; each
binary frame carries part of the MQTT byte stream. The endpoint drives the very handler the
event loop drives for TCP (``handler.ConnectionHandler``, an ``asyncio.Protocol``):
``connection_made`` with a ``Link`` over the WebSocket, ``data_received`` with each
frame's bytes, ``connection_lost`` when it closes. Only the driving differs: this loop stops
receiving frames while the handler has paused reading.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from broker_plugins.handler import ConnectionHandler

if TYPE_CHECKING:
    from broker_plugins.broker import HubbubBroker

__all__ = ["MQTT_SUBPROTOCOL", "WebSocketBridge"]

logger = logging.getLogger(__name__)

MQTT_SUBPROTOCOL = "mqtt"


class _WebSocketLink:
    """A WebSocket as a handler's ``Link``: what is written in one turn leaves in one binary frame."""

    __slots__ = ("_closer", "_flusher", "_paused", "_pending", "_websocket")

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._pending = bytearray()
        self._flusher: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._paused: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        """Buffer ``data`` and schedule one send for everything buffered until it runs."""
        if self._closer is not None:
            return
        self._pending += data
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def get_write_buffer_size(self) -> int:
        """Bytes not yet handed to the WebSocket."""
        return len(self._pending)

    def pause_reading(self) -> None:
        """Receive no frame until ``resume_reading``."""
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume_reading(self) -> None:
        """Receive frames again."""
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    async def readable(self) -> None:
        """Return once reading is not paused."""
        while self._paused is not None:
            await self._paused

    def close(self) -> None:
        """Send what is buffered, then close the WebSocket (once)."""
        self.resume_reading()  # the driving loop must see the close even while paused
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self._close())

    def is_closing(self) -> bool:
        """Whether ``close`` was called."""
        return self._closer is not None

    async def closed(self) -> None:
        """Close (if not yet) and wait until the WebSocket is closed."""
        self.close()
        if self._closer is not None:
            await self._closer

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: ANN401 - asyncio's signature
        """``peername`` as a TCP transport gives it; nothing else."""
        client = self._websocket.client
        if name == "peername":
            return (client.host, client.port) if client else ("unknown", 0)
        return default

    async def _flush(self) -> None:
        if self._pending and self._websocket.application_state == WebSocketState.CONNECTED:
            data = bytes(self._pending)
            self._pending.clear()
            try:
                await self._websocket.send_bytes(data)
            except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
                logger.debug("MQTT WebSocket closed while sending")

    async def _close(self) -> None:
        flusher = self._flusher
        if flusher is not None:
            await flusher
        await self._flush()
        if self._websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self._websocket.close()
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                # The client went first (uvicorn's ClientDisconnected, as Starlette's
                # WebSocketDisconnect): an expected end, not an error.
                logger.info("MQTT WebSocket already closed by the client (%s)", type(exc).__name__)


class WebSocketBridge:
    """A WebSocket endpoint that hands each connection to the broker, as its TCP listener does."""

    def __init__(self, broker: HubbubBroker) -> None:
        self._broker = broker

    async def serve(self, websocket: WebSocket) -> None:
        """Accept with the ``mqtt`` subprotocol and feed the frames to a handler until either side closes."""
        if MQTT_SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
            await websocket.close(code=1002, reason="the 'mqtt' subprotocol is required")
            return
        await websocket.accept(subprotocol=MQTT_SUBPROTOCOL)
        link = _WebSocketLink(websocket)
        handler = ConnectionHandler(self._broker)
        handler.connection_made(cast("asyncio.BaseTransport", link))
        try:
            while True:
                await link.readable()
                if link.is_closing():
                    break
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    # MQTT over WebSocket is binary only [MQTT-6.0.0-1]: a text frame ends the connection.
                    logger.info("closing MQTT WebSocket: text frame received")
                    break
                handler.data_received(data)
        except (WebSocketDisconnect, OSError) as exc:  # OSError: uvicorn's ClientDisconnected
            logger.info("MQTT WebSocket closed by the client: %s", type(exc).__name__)
        finally:
            handler.connection_lost(None)
            await link.closed()
