"""Stream adapters with the two operations the hot path needs: read what is there, write without waiting.

amqtt's ``StreamReaderAdapter.read(n)`` is ``readexactly(n)`` (one ``await`` per header
byte) and every packet it sends is followed by ``await drain()``. The broker's reader
loop instead takes whatever bytes have arrived (``read_some``) and splits them into
packets itself, and fan-out writes into the transport's buffer (``send_nowait``) — the
kernel and the event loop flush it. ``buffered`` lets the sender shed QoS 0 messages for a
client that stopped reading instead of buffering without bound.

``TcpReader`` / ``TcpWriter`` implement amqtt's public adapter interfaces (its CONNECT,
SUBSCRIBE and UNSUBSCRIBE decoders read from a ``ReaderAdapter``) over asyncio streams
of their own, without reaching into amqtt's stream adapters.
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import suppress
from typing import Protocol, runtime_checkable

from amqtt.adapters import ReaderAdapter, WriterAdapter

__all__ = ["FastReader", "FastWriter", "TcpReader", "TcpWriter"]


@runtime_checkable
class FastReader(Protocol):
    """A reader that returns as soon as any bytes are there."""

    async def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes, at least one; ``b""`` at end of stream."""
        ...


@runtime_checkable
class FastWriter(Protocol):
    """A writer that buffers without waiting."""

    def send_nowait(self, data: bytes) -> None:
        """Queue ``data`` for the peer; never blocks, dropped once the connection is closing."""
        ...

    def buffered(self) -> int:
        """Bytes queued but not yet handed to the kernel."""
        ...


class TcpReader(ReaderAdapter):
    """An asyncio ``StreamReader`` as a ``ReaderAdapter`` (exact reads), plus ``read_some``."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream

    async def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes (everything up to EOF for ``-1``); ``IncompleteReadError`` at EOF."""
        return await (self.stream.read(n) if n < 0 else self.stream.readexactly(n))

    async def read_some(self, limit: int) -> bytes:
        """Whatever arrived, up to ``limit`` bytes."""
        return await self.stream.read(limit)

    def feed_eof(self) -> None:
        """Make pending and later reads see the end of the stream."""
        self.stream.feed_eof()


class TcpWriter(WriterAdapter):
    """An asyncio ``StreamWriter`` as a ``WriterAdapter``, plus ``send_nowait`` / ``buffered``."""

    def __init__(self, stream: asyncio.StreamWriter) -> None:
        self.stream = stream
        self.is_closed = False

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport, unless closing."""
        if not self.is_closed:
            self.stream.write(data)

    send_nowait = write  # the transport writes at once if the socket can take it

    def buffered(self) -> int:
        """The transport's write-buffer size."""
        return int(self.stream.transport.get_write_buffer_size())

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark."""
        if not self.is_closed:
            await self.stream.drain()

    def get_peer_info(self) -> tuple[str, int] | None:
        """The client's address and port."""
        peer = self.stream.get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if peer and len(peer) >= 2 else None  # noqa: PLR2004 - (host, port)

    def get_ssl_info(self) -> ssl.SSLObject | None:
        """The TLS object (``None``: plain TCP)."""
        info: ssl.SSLObject | None = self.stream.get_extra_info("ssl_object")
        return info

    async def close(self) -> None:
        """Flush, half-close and close the connection (once)."""
        if self.is_closed:
            return
        self.is_closed = True  # first, so that writes racing with the awaits below are dropped
        with suppress(ConnectionError, OSError):
            await self.stream.drain()
            if self.stream.can_write_eof():
                self.stream.write_eof()
        self.stream.close()
        with suppress(ConnectionError, OSError):
            await self.stream.wait_closed()
