"""Serving ASGI apps with uvicorn on a socket bound up front, with a readiness signal.

Every connection goes through the guard of ``http_guard.py``: idle and slow connections are
closed and connections are capped, so the HTTP port cannot starve the process of descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Generator
from typing import ClassVar

import uvicorn

from config import Settings
from launcher.http_guard import (
    ConnectionGuard,
    GuardedHttpProtocol,
    GuardedServerState,
    GuardedWebSocketProtocol,
    HttpLimits,
)

__all__ = ["ReadyServer", "bind_socket"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen before serving, so the real port is known (``port`` 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class ReadyServer(uvicorn.Server):
    """A uvicorn server that says when its lifespan has started and it accepts requests.

    Its config must use the guarded protocols (``http=ReadyServer.http_protocol``,
    ``ws=ReadyServer.ws_protocol``), which enforce the HTTP limits of ``settings``.

    SIGINT/SIGTERM end the serving loop and nothing else: uvicorn's own handling re-raises
    the signal after shutdown, which would kill the process before the broker and the
    persister beside it have shut down cleanly.
    """

    http_protocol: ClassVar[type[GuardedHttpProtocol]] = GuardedHttpProtocol
    ws_protocol: ClassVar[type[GuardedWebSocketProtocol]] = GuardedWebSocketProtocol

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        if config.http is not self.http_protocol or config.ws is not self.ws_protocol:
            raise ValueError("ReadyServer needs http=ReadyServer.http_protocol, ws=ReadyServer.ws_protocol")
        super().__init__(config)
        self.ready = asyncio.Event()
        self.guard = ConnectionGuard(HttpLimits.from_settings(settings))
        self.server_state = GuardedServerState(self.guard)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        """Stop serving on SIGINT/SIGTERM; the caller then shuts the rest down."""
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._stop)
        try:
            yield
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Run uvicorn's start-up (the app's lifespan included), then signal readiness."""
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Shut down as uvicorn does, then log the last counts of closed and refused connections."""
        await super().shutdown(sockets=sockets)
        self.guard.flush_report()
