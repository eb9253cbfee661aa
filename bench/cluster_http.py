"""A minimal keep-alive HTTP/1.1 client for the failover devices' REST calls (``GET`` only).

Why not httpx: with a thousand devices of one worker process waiting for its few pooled
connections, httpcore rescans its whole queue of waiting requests on every completion, and
asks ``sniffio`` (a failed import, searched again on ``sys.path`` each time, where it is not
installed) for the event loop on every request and lock. Both failover workers then spent
their whole core in httpx (py-spy: over 80 % of their samples, 2026-11-27) and starved the
processes under test on the same two cores. Devices are phones with CPUs of their own: here
each request costs a write and one read of a ``Content-Length`` body on a pooled connection,
and the requests wait for a connection in an ``asyncio.Queue``, not in the pool's scan.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

__all__ = ["HttpError", "HttpPool"]

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


class HttpError(Exception):
    """An answer that is not ``200 OK`` (its status and body), or not HTTP/1.1 this client reads."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """At most ``size`` keep-alive connections to the server at ``base_url``; ``get`` waits for one."""

    def __init__(self, base_url: str, size: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port
        self._host_header = f"Host: {parts.hostname}:{parts.port}\r\n"
        self._free: asyncio.Queue[_Connection | None] = asyncio.Queue()
        for _ in range(size):
            self._free.put_nowait(None)  # a slot: connected on first use

    async def get(self, path: str, headers: dict[str, str]) -> bytes:
        """The body of ``GET path``; ``HttpError`` unless the answer is ``200``.

        A pooled connection the server closed meanwhile is replaced and the request sent again
        on the new one (a ``GET`` may be repeated).
        """
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = f"GET {path} HTTP/1.1\r\n{self._host_header}{extra}\r\n".encode()
        conn = await self._free.get()
        try:
            answer = None
            if conn is not None:
                try:
                    answer = await self._exchange(conn, request)
                except (ConnectionError, asyncio.IncompleteReadError):  # closed while pooled
                    conn.close()
                    conn = None
            if answer is None:
                conn = _Connection(*await asyncio.open_connection(self.host, self.port))
                answer = await self._exchange(conn, request)
            if not answer[2] and conn is not None:  # the server closes it: a new one next time
                conn.close()
                conn = None
        except BaseException:
            if conn is not None:
                conn.close()
            conn = None
            raise
        finally:
            self._free.put_nowait(conn)
        status, body, _ = answer
        if status != 200:  # noqa: PLR2004 - HTTP OK
            raise HttpError(status, body)
        return body

    async def _exchange(self, conn: _Connection, request: bytes) -> tuple[int, bytes, bool]:
        conn.writer.write(request)
        head = await conn.reader.readuntil(_HEAD_END)
        if len(head) > _MAX_HEAD:
            raise HttpError(0, head[:200])
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" not in fields:
            raise HttpError(status, b"no Content-Length (chunked answers are not read here)")
        body = await conn.reader.readexactly(int(fields["content-length"]))
        return status, body, fields.get("connection", "").lower() != "close"

    async def close(self) -> None:
        """Close every pooled connection (requests still running close theirs when they end)."""
        while not self._free.empty():
            conn = self._free.get_nowait()
            if conn is not None:
                conn.close()
                with contextlib.suppress(OSError):
                    await conn.writer.wait_closed()
