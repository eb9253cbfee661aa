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

    def is_closing(self) -> bool:
        """Whether it is closed or closing (writing then fails or is lost)."""
        ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: ANN401 - asyncio's signature
        """``peername``, ``ssl_object``, ... as asyncio names them."""
        ...


class ConnectReader(ReaderAdapter):
    """The bytes of a connection before its CONNECT was accepted, as an amqtt ``ReaderAdapter``.

    The decoder reads a few bytes at a time from what usually arrived in one piece: the
    bytes are kept as they came, with a read position, rather than copied into a buffer.
    """

    __slots__ = ("_data", "_eof", "_position", "_waiter")

    def __init__(self) -> None:
        self._data = b""
        self._position = 0
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> int:
        """More bytes arrived; returns how many are unread now."""
        self._data = self._data[self._position :] + data if self._data else data
        self._position = 0
        self._wake()
        return len(self._data)

    def feed_eof(self) -> None:
        """The connection ended: pending and later reads fail once the bytes run out."""
        self._eof = True
        self._wake()

    def take(self) -> bytes:
        """What was fed and not read (packets the client sent right after its CONNECT)."""
        data = self._data[self._position :]
        self._data, self._position = b"", 0
        return data

    async def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes (``-1``: whatever is there, at least one); ``IncompleteReadError`` at EOF."""
        want = max(n, 1)
        while len(self._data) - self._position < want:
            if self._eof:
                raise asyncio.IncompleteReadError(self.take(), n if n >= 0 else None)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        start = self._position
        self._position = end = len(self._data) if n < 0 else start + n
        return self._data[start:end]

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class LinkWriter(WriterAdapter):
    """A ``Link`` as an amqtt ``WriterAdapter``: the CONNECT decoder's CONNACK refusals go through it."""

    __slots__ = ("_link", "_peer")

    def __init__(self, link: Link) -> None:
        self._link = link
        self._peer: tuple[str, int] | None = None

    def write(self, data: bytes) -> None:
        """Queue ``data`` (dropped if the connection is closing: the client left already)."""
        if not self._link.is_closing():
            self._link.write(data)

    async def drain(self) -> None:
        """Nothing to wait for: the link flushes on its own."""

    def get_peer_info(self) -> tuple[str, int] | None:
        """The client's address and port (asked once: each ask is a system call)."""
        if self._peer is None:
            peer = self._link.get_extra_info("peername")
            if peer and len(peer) >= 2:  # noqa: PLR2004 - (host, port)
                self._peer = (str(peer[0]), int(peer[1]))
        return self._peer

    def get_ssl_info(self) -> ssl.SSLObject | None:
        """The TLS object (``None``: plain TCP or WebSocket)."""
        info: ssl.SSLObject | None = self._link.get_extra_info("ssl_object")
        return info

    async def close(self) -> None:
        """Close the connection (what was written is flushed first)."""
        self._link.close()
