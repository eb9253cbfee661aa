"""Running the platform: everything in one process (``up``) or one part each."""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from api import BrokerEndpoint, create_app
from broker_plugins import BrokerOptions, HubbubBroker, WebSocketBridge
from config import Settings, resolve_secret
from hubbub.tokens import TokenCodec
from launcher.http import ReadyServer, bind_socket

__all__ = ["run_api", "run_broker", "run_up"]

logger = logging.getLogger(__name__)

_WS_PATH = "/mqtt"
# A WebSocket frame may carry one whole MQTT packet plus its framing.
_WS_FRAME_OVERHEAD = 16


def _announce(**endpoints: str) -> None:
    """One line on stdout when everything listens: for people, scripts and tests."""
    print("hubbub ready:", " ".join(f"{name}={value}" for name, value in endpoints.items()), flush=True)  # noqa: T201


def _uvicorn(app: object, settings: Settings) -> ReadyServer:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        ws_max_size=settings.max_packet_bytes + _WS_FRAME_OVERHEAD,
        ws_ping_interval=None,  # MQTT has its own keepalive
        lifespan="on",
    )
    return ReadyServer(config)


def _broker(settings: Settings, tokens: TokenCodec) -> HubbubBroker:
    options = BrokerOptions(
        bind=settings.bind,
        mqtt_port=settings.mqtt_port,
        max_packet_bytes=settings.max_packet_bytes,
        connect_timeout_s=settings.connect_timeout_s,
    )
    return HubbubBroker(options, tokens=tokens)


async def _serve_until_stopped(server: ReadyServer, sock: socket.socket, **announce: str) -> None:
    """Serve HTTP on ``sock`` until a signal stops uvicorn; announce once it is ready."""
    host, port = sock.getsockname()[:2]
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(server.serve(sockets=[sock]), name="http-server")
        ready = group.create_task(server.ready.wait(), name="http-ready")
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            _announce(**announce, http=f"http://{host}:{port}")
        else:
            ready.cancel()


async def run_up(settings: Settings) -> None:
    """Broker, API and MQTT over WebSocket in one process, sharing one HTTP port."""
    secret = resolve_secret(settings)
    tokens = TokenCodec(secret, access_ttl_s=settings.access_token_ttl_s)
    broker = _broker(settings, tokens)
    await broker.start()
    try:
        http_socket = bind_socket(settings.bind, settings.http_port)
        http_port = http_socket.getsockname()[1]
        host = settings.advertised_host
        endpoint = BrokerEndpoint(
            host=host, port=broker.mqtt_port, ws_url=f"ws://{host}:{http_port}{_WS_PATH}"
        )
        app = create_app(settings, secret=secret, broker=endpoint)
        app.add_api_websocket_route(_WS_PATH, WebSocketBridge(broker).serve)
        await _serve_until_stopped(
            _uvicorn(app, settings), http_socket, mqtt=f"{settings.bind}:{broker.mqtt_port}"
        )
    finally:
        await broker.shutdown()


async def run_broker(settings: Settings) -> None:
    """The broker alone: MQTT over TCP, and over WebSocket on ``broker_ws_port``."""
    tokens = TokenCodec(resolve_secret(settings), access_ttl_s=settings.access_token_ttl_s)
    broker = _broker(settings, tokens)
    await broker.start()
    try:
        ws_app = Starlette(routes=[WebSocketRoute(_WS_PATH, WebSocketBridge(broker).serve)])
        sock = bind_socket(settings.bind, settings.broker_ws_port)
        await _serve_until_stopped(
            _uvicorn(ws_app, settings), sock, mqtt=f"{settings.bind}:{broker.mqtt_port}"
        )
    finally:
        await broker.shutdown()


async def run_api(settings: Settings) -> None:
    """The REST API alone; it tells devices where the broker is from the settings."""
    host = settings.advertised_host
    endpoint = BrokerEndpoint(
        host=host, port=settings.mqtt_port, ws_url=f"ws://{host}:{settings.broker_ws_port}{_WS_PATH}"
    )
    app = create_app(settings, secret=resolve_secret(settings), broker=endpoint)
    await _serve_until_stopped(_uvicorn(app, settings), bind_socket(settings.bind, settings.http_port))
