"""Stream adapters with the two operations the hot path needs: read what is there, write without waiting.

amqtt's ``StreamReaderAdapter.read(n)`` is ``readexactly(n)`` (one ``await`` per header
byte) and every packet it sends is followed by ``await drain()``. The broker's reader
loop instead takes whatever bytes have arrived (``read_some``) and splits them into
packets itself, and fan-out writes into the transport's buffer (``send_nowait``) — the
kernel and the event loop flush it. ``buffered`` lets the sender shed QoS 0 messages for a
client that stopped reading instead of buffering without bound.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter

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


class TcpReader(StreamReaderAdapter):
    """``StreamReaderAdapter`` plus ``read_some``."""

    async def read_some(self, limit: int) -> bytes:
        """Whatever arrived, up to ``limit`` bytes."""
        data: bytes = await self._reader.read(limit)
        return data


class TcpWriter(StreamWriterAdapter):
    """``StreamWriterAdapter`` plus ``send_nowait`` / ``buffered``."""

    def send_nowait(self, data: bytes) -> None:
        """Hand ``data`` to the transport (it writes at once if the socket can take it)."""
        if not self.is_closed:
            self._writer.write(data)

    def buffered(self) -> int:
        """The transport's write-buffer size."""
        transport = self._writer.transport
        return 0 if transport is None else int(transport.get_write_buffer_size())
