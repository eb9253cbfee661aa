"""Keeping the HTTP port from being starved: idle and slow connections closed, connections capped.

uvicorn's HTTP protocols have no deadline for a request head: a connection that sends nothing,
half a request line, or its headers a byte at a time stays open for ever, and each one holds a
file descriptor of the process that the MQTT broker shares. Once the process runs out of
descriptors, ``/healthz`` resets and MQTT CONNECTs fail. uvicorn lets its protocol classes be
replaced (``uvicorn.Config(http=..., ws=...)``), so the subclasses here add what is missing:

- an idle timeout: a connection that sends no byte of a request within ``idle_timeout_s`` of
  connecting or of its last response is closed (uvicorn's own keep-alive timer, which it arms
  only after a response, is armed at connect too, and a stray byte cannot restart it);
- a head timeout: a request's line and headers must all arrive within ``head_timeout_s`` of its
  first byte (else ``408`` and close), and weigh at most ``_MAX_HEAD_BYTES`` (else ``431``);
- a body timeout: a request body may pause at most ``body_timeout_s`` between two reads while
  the app waits for it (else ``408`` and close; a pause the server asked for does not count);
- a cap per client address and a global cap, counted from accept to close and WebSockets
  included (each holds a descriptor), past which a connection gets ``503`` and is closed at once
  (a trusted reverse proxy is held to the global cap only: its users share its address);
- a log line, at most one a minute, counting what was closed or refused and why.

An established WebSocket (MQTT over WebSocket) is a different protocol object, untouched by the
HTTP timers: MQTT's own keepalive and CONNECT timeout end dead ones.

uvicorn's settings do not cover this: ``timeout_keep_alive`` runs only after a response (and any
byte, even a blank line, stops it for good), ``limit_concurrency`` answers 503 only once a whole
head has arrived, and ``h11_max_incomplete_event_size`` is for h11, not the httptools parser used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import resource
import time
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from config import Settings

__all__ = [
    "ConnectionGuard",
    "GuardedHttpProtocol",
    "GuardedServerState",
    "GuardedWebSocketProtocol",
    "HttpLimits",
    "default_connection_cap",
]

logger = logging.getLogger(__name__)

# The descriptor budget: the HTTP port (REST, the web chat and MQTT over WebSocket) may hold at
# most this share of the process's RLIMIT_NOFILE. The rest stays for MQTT over TCP, the database,
# the log and the push clients, so a flood of HTTP connections cannot stop MQTT devices connecting.
# A connection past a cap is accepted and closed at once: beyond the cap, the port only holds the
# descriptors of connections being refused at that moment (at most a listen backlog's worth).
HTTP_SHARE_OF_DESCRIPTORS: Final = 0.5
_DESCRIPTORS_IF_UNLIMITED = 1 << 20  # RLIM_INFINITY (macOS): cap at what Linux allows by default
# Far above any real request head (nginx allows 32 KiB), far below what hurts memory.
_MAX_HEAD_BYTES = 64 * 1024
_REPORT_EVERY_S = 60.0

# Why a connection was closed or refused: the keys of the report line.
IDLE = "idle"
SLOW_HEAD = "slow_head"
SLOW_BODY = "slow_body"
HEAD_TOO_LARGE = "head_too_large"
OVER_ADDRESS_CAP = "over_address_cap"
OVER_GLOBAL_CAP = "over_global_cap"
_REFUSALS = frozenset({OVER_ADDRESS_CAP, OVER_GLOBAL_CAP})


def default_connection_cap() -> int:
    """The global cap when none is configured: a share of this process's descriptor limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    descriptors = _DESCRIPTORS_IF_UNLIMITED if soft == resource.RLIM_INFINITY else soft
    return max(1, math.floor(descriptors * HTTP_SHARE_OF_DESCRIPTORS))


@dataclass(frozen=True)
class HttpLimits:
    """The timeouts and caps of one HTTP port."""

    idle_timeout_s: float
    head_timeout_s: float
    body_timeout_s: float
    max_per_address: int
    max_connections: int
    # Reverse proxies (``trusted_proxies``): every user behind one shares its address, so the
    # per-address cap would refuse them; only the global cap applies to these peers.
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The configured limits; the global cap defaults to the descriptor budget above."""
        max_connections = settings.http_max_connections or default_connection_cap()
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if max_connections >= soft:
            logger.warning(
                "HUBBUB_HTTP_MAX_CONNECTIONS=%d is not below the descriptor limit (%d): "
                "an HTTP flood can leave MQTT without descriptors",
                max_connections,
                soft,
            )
        return cls(
            idle_timeout_s=settings.http_idle_timeout_s,
            head_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            max_per_address=settings.http_max_connections_per_address,
            max_connections=max_connections,
            proxies=tuple(settings.trusted_proxy_networks),
        )


class _Report:
    """Counts of closed and refused connections, logged at once and then at most once a minute."""

    def __init__(self, limits: HttpLimits) -> None:
        self._limits = limits
        self._counts: Counter[str] = Counter()
        self._refused_from: Counter[str] = Counter()
        self._last = -math.inf
        self._pending: asyncio.TimerHandle | None = None

    def note(self, reason: str, address: str) -> None:
        self._counts[reason] += 1
        if reason in _REFUSALS:
            self._refused_from[address] += 1
        if self._pending is not None:
            return
        wait = self._last + _REPORT_EVERY_S - time.monotonic()
        if wait <= 0:
            self.flush()
        else:
            self._pending = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if not self._counts:
            return
        self._last = time.monotonic()
        counts = " ".join(f"{reason}={count}" for reason, count in sorted(self._counts.items()))
        worst = ""
        if self._refused_from:
            address, refused = self._refused_from.most_common(1)[0]
            worst = f"; most refused: {address} ({refused})"
        # Idle keep-alive connections closing is ordinary; anything else is worth a warning.
        level = logging.INFO if set(self._counts) == {IDLE} else logging.WARNING
        logger.log(
            level,
            "HTTP connections closed or refused: %s (caps: %d per address, %d in all)%s",
            counts,
            self._limits.max_per_address,
            self._limits.max_connections,
            worst,
        )
        self._counts.clear()
        self._refused_from.clear()


class ConnectionGuard:
    """Who holds the HTTP port's connections: admission against the caps, and the report."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self._open: dict[asyncio.BaseTransport, str] = {}
        self._per_address: Counter[str] = Counter()
        self._report = _Report(limits)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count a new connection in, or say it must be refused (and count the refusal)."""
        address = _address_of(transport)
        if len(self._open) >= self.limits.max_connections:
            self._report.note(OVER_GLOBAL_CAP, address)
            return False
        if self._per_address[address] >= self.limits.max_per_address and not self._is_proxy(address):
            self._report.note(OVER_ADDRESS_CAP, address)
            return False
        self._open[transport] = address
        self._per_address[address] += 1
        return True

    def _is_proxy(self, address: str) -> bool:
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in network for network in self.limits.proxies)

    def release(self, transport: asyncio.BaseTransport) -> None:
        """A connection admitted earlier has closed (once is enough; later calls do nothing)."""
        address = self._open.pop(transport, None)
        if address is None:
            return
        self._per_address[address] -= 1
        if not self._per_address[address]:
            del self._per_address[address]

    def closed(self, transport: asyncio.BaseTransport, reason: str) -> None:
        """The server is closing a connection for ``reason``: count it for the report."""
        self._report.note(reason, _address_of(transport))

    def flush_report(self) -> None:
        """Log the counts not reported yet (at shutdown)."""
        self._report.flush()


def _address_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class GuardedServerState(ServerState):
    """uvicorn's shared server state, carrying the guard to every protocol instance."""

    def __init__(self, guard: ConnectionGuard) -> None:
        super().__init__()
        self.guard = guard


def _guard_of(server_state: ServerState) -> ConnectionGuard:
    if not isinstance(server_state, GuardedServerState):
        raise TypeError("the guarded protocols need a GuardedServerState (serve with ReadyServer)")
    return server_state.guard


def _closing_response(status: HTTPStatus, *extra_headers: bytes) -> bytes:
    body = status.phrase.encode("ascii")
    head = [
        f"HTTP/1.1 {status.value} {status.phrase}".encode("ascii"),
        b"content-type: text/plain; charset=utf-8",
        b"content-length: %d" % len(body),
        b"connection: close",
        *extra_headers,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_REFUSED = _closing_response(HTTPStatus.SERVICE_UNAVAILABLE, b"retry-after: 1")
_TIMED_OUT = _closing_response(HTTPStatus.REQUEST_TIMEOUT)
_HEAD_TOO_LARGE = _closing_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with admission to the caps, and idle, head and body deadlines."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._guard = _guard_of(server_state)
        # uvicorn's keep-alive timer, armed after each response, is the idle timer.
        self.timeout_keep_alive = self._guard.limits.idle_timeout_s  # type: ignore[assignment]
        self._admitted = False
        self._idle_deadline = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse with 503 past a cap; else serve, with the idle deadline running from now."""
        if not self._guard.admit(transport):
            transport.write(_REFUSED)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_idle(self.loop.time() + self.timeout_keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        """Give the connection's place back (a refused one never had one)."""
        if not self._admitted:
            return
        self._guard.release(self.transport)
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, then keep whichever deadline applies running."""
        super().data_received(data)  # cancels the idle timer; may upgrade to a WebSocket
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self._head_timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD_BYTES:
                self._close(HEAD_TOO_LARGE, _HEAD_TOO_LARGE)
        elif (self.cycle is None or self.cycle.response_complete) and self.timeout_keep_alive_task is None:
            # Bytes between requests that began none (blank lines): the idle deadline stands.
            self._arm_idle(self._idle_deadline)

    def on_message_begin(self) -> None:
        """A request's first byte: its head must be complete within the head timeout."""
        super().on_message_begin()
        if self._head_timer is None:
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(self._guard.limits.head_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        """The head arrived in time; its body (if any) must now keep coming."""
        self._cancel_head_timer()
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):  # a WebSocket has no body
            self._arm_body_timer()

    def on_body(self, body: bytes) -> None:
        """Body bytes came: the pause allowed starts again."""
        super().on_body(body)
        if self._body_timer is not None:
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        """The whole request arrived."""
        self._cancel_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Note when the idle period uvicorn starts here must end."""
        self._idle_deadline = self.loop.time() + self.timeout_keep_alive
        super().on_response_complete()

    def timeout_keep_alive_handler(self) -> None:
        """No request began within the idle timeout: close, silently (as keep-alive allows)."""
        if not self.transport.is_closing():
            self._guard.closed(self.transport, IDLE)
        super().timeout_keep_alive_handler()

    def _arm_idle(self, deadline: float) -> None:
        self._idle_deadline = deadline
        self.timeout_keep_alive_task = self.loop.call_at(deadline, self.timeout_keep_alive_handler)

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self._guard.limits.body_timeout_s, self._body_timed_out)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the server stopped reading (the app is behind): not a slow client
            self._arm_body_timer()
            return
        started = self.cycle is not None and self.cycle.response_started
        self._close(SLOW_BODY, b"" if started else _TIMED_OUT)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._close(SLOW_HEAD, _TIMED_OUT)

    def _close(self, reason: str, response: bytes) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        self._guard.closed(self.transport, reason)
        self.transport.write(response)
        self.transport.close()


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, giving its connection's place back when it closes.

    An upgraded connection was admitted as HTTP and keeps its place (and its descriptor) until
    it closes; no HTTP timer applies to it.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._guard = _guard_of(server_state)

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the connection's place in the caps."""
        self._guard.release(self.transport)
        super().connection_lost(exc)
