"""An in-memory connection writer for the CONNECT tests of ``test_codec`` and ``test_connect_decoder``."""

from __future__ import annotations

import ssl

from amqtt.adapters import WriterAdapter

__all__ = ["RecordingWriter"]


class RecordingWriter(WriterAdapter):
    """A connection's writer in memory: what the broker wrote back (a CONNACK) and whether it closed."""

    def __init__(self, peer: tuple[str, int] | None = None) -> None:
        self.written = b""
        self.closed = False
        self._peer = peer

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        return None

    def get_peer_info(self) -> tuple[str, int] | None:
        return self._peer

    def get_ssl_info(self) -> ssl.SSLObject | None:
        return None

    async def close(self) -> None:
        self.closed = True
