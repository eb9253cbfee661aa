"""What a connection handler needs of its connection (``Link``).

The broker serves TCP with an ``asyncio.Protocol`` (the handler itself): the event loop
hands it whatever bytes arrived, and it writes into the transport's buffer, which the
kernel and the event loop flush. An idle connection therefore holds no task, no coroutine
frame and no stream object, only its transport and its handler. ``Link`` is the part of an
asyncio transport the handler uses; the WebSocket bridge implements it too. The CONNECT is
framed and decoded from the bytes the handler was fed, like every later packet: no reader,
writer or task stands between a connection and its CONNACK.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Link"]


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
