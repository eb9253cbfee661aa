"""Serving a process's HTTP side with uvicorn, and the one line that says it is ready."""

from __future__ import annotations

import asyncio
import gc
import socket

import uvicorn

from config import Settings
from launcher.http import ReadyServer

__all__ = [
    "WS_PATH",
    "announce",
    "http_url",
    "serve_until_stopped",
    "tune_gc_after_start_up",
    "uvicorn_server",
]

WS_PATH = "/mqtt"
_GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)
# A WebSocket frame may carry one whole MQTT packet plus its framing.
_WS_FRAME_OVERHEAD = 16


def announce(**endpoints: str) -> None:
    """One line on stdout when everything listens: for people, scripts and tests.

    ``hubbub ready: [mqtt=host:port] [ws=ws://...] http=http://host:port`` (the contract
    ``tests/support/platform.py`` and ``make cluster`` parse).
    """
    print("hubbub ready:", " ".join(f"{name}={value}" for name, value in endpoints.items()), flush=True)  # noqa: T201


def tune_gc_after_start_up() -> None:
    """Take start-up's objects out of the collector's sight and collect the young less often.

    Start-up leaves ~180,000 objects (modules, SQLAlchemy, pydantic, FastAPI) that live as long
    as the process; frozen, full collections stop walking them (the gen-2 time of a chat run
    fell from ~500 to ~170 ms). Per message the platform makes a few dozen short-lived objects:
    with CPython's default young threshold (700) collections kept finding a batch still in
    flight and walked and promoted it (~290 ms of young collections over a chat run's process,
    start-up included); at 10,000 nearly all of them are freed by reference counting first
    (9 ms of collections after ready, in the same run).
    """
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD)


def uvicorn_server(app: object, settings: Settings) -> ReadyServer:
    """A guarded uvicorn server for ``app`` (HTTP limits, MQTT-sized WebSocket frames)."""
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        http=ReadyServer.http_protocol,  # idle/slow connections closed, caps (launcher/http_guard.py)
        ws=ReadyServer.ws_protocol,
        ws_max_size=settings.max_packet_bytes + _WS_FRAME_OVERHEAD,
        ws_ping_interval=None,  # MQTT has its own keepalive
        proxy_headers=False,  # X-Forwarded-For: believed only from HUBBUB_TRUSTED_PROXIES (api/ratelimit.py)
        lifespan="on",
    )
    return ReadyServer(config, settings)


def http_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


async def serve_until_stopped(server: ReadyServer, sock: socket.socket, **announced: str) -> None:
    """Serve HTTP on ``sock`` until a signal stops uvicorn; announce once it is ready."""
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(server.serve(sockets=[sock]), name="http-server")
        ready = group.create_task(server.ready.wait(), name="http-ready")
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            tune_gc_after_start_up()
            announce(**announced, http=http_url(sock))
        else:
            ready.cancel()
