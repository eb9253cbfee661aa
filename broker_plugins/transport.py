"""What a connection handler needs of its connection, and the adapters its CONNECT is read through.

The broker serves TCP with an ``asyncio.Protocol`` (the handler itself): the event loop
hands it whatever bytes arrived, and it writes into the transport's buffer, which the
kernel and the event loop flush. An idle connection therefore holds no task, no coroutine
frame and no stream object, only its transport and its handler. ``Link`` is the part of an
asyncio transport the handler uses; the WebSocket bridge implements it too.

The CONNECT is still read by a coroutine (``connect.read_connect``, through amqtt's
``ReaderAdapter`` / ``WriterAdapter`` interfaces), in a task that ends with the CONNACK:
``ConnectReader`` serves it the bytes the handler was fed meanwhile, ``LinkWriter`` writes
its answer.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Protocol

from amqtt.adapters import ReaderAdapter, WriterAdapter

__all__ = ["ConnectReader", "Link", "LinkWriter"]


class Link(Protocol):
    """A connection's byte pipe: what ``asyncio.Transport`` offers, as far as a handler needs it."""

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer; never blocks."""
        ...

    def get_write_buffer_size(self) -> int:
        """Bytes queued but not yet handed to the kernel (or the WebSocket)."""
        ...

    def pause_reading(self) -> None:
        """Deliver no more bytes until ``resume_reading``."""
        ...

    def resume_reading(self) -> None:
        """Deliver bytes again."""
        ...

    def close(self) -> None:
        """Flush what is queued, then close; the handler's ``connection_lost`` follows."""
        ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: ANN401 - asyncio's signature
        """``peername``, ``ssl_object``, ... as asyncio names them."""
        ...


class ConnectReader(ReaderAdapter):
    """The bytes of a connection before its CONNECT was accepted, as an amqtt ``ReaderAdapter``."""

    __slots__ = ("_buffer", "_eof", "_waiter")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> int:
        """More bytes arrived; returns how many are buffered now."""
        self._buffer += data
        self._wake()
        return len(self._buffer)

    def feed_eof(self) -> None:
        """The connection ended: pending and later reads fail once the buffer runs out."""
        self._eof = True
        self._wake()

    def take(self) -> bytes:
        """What was fed and not read (packets the client sent right after its CONNECT)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    async def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes (``-1``: whatever is there, at least one); ``IncompleteReadError`` at EOF."""
        want = max(n, 1)
        while len(self._buffer) < want:
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._buffer), n if n >= 0 else None)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        size = len(self._buffer) if n < 0 else n
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class LinkWriter(WriterAdapter):
    """A ``Link`` as an amqtt ``WriterAdapter``: the CONNECT decoder's CONNACK refusals go through it."""

    __slots__ = ("_link",)

    def __init__(self, link: Link) -> None:
        self._link = link

    def write(self, data: bytes) -> None:
        """Queue ``data``."""
        self._link.write(data)

    async def drain(self) -> None:
        """Nothing to wait for: the link flushes on its own."""

    def get_peer_info(self) -> tuple[str, int] | None:
        """The client's address and port."""
        peer = self._link.get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if peer and len(peer) >= 2 else None  # noqa: PLR2004 - (host, port)

    def get_ssl_info(self) -> ssl.SSLObject | None:
        """The TLS object (``None``: plain TCP or WebSocket)."""
        info: ssl.SSLObject | None = self._link.get_extra_info("ssl_object")
        return info

    async def close(self) -> None:
        """Close the connection (what was written is flushed first)."""
        self._link.close()
