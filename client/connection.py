"""A device's MQTT connection, kept up across broker nodes by a thread of its own.

paho's own reconnect retries the one host it was given, which is no use once that node is dead.
So every attempt here is a fresh paho client (``reconnect_on_failure`` off) to the route's
current node, held until it ends; then ``BrokerRoute`` names the next node and the wait before
it. A CONNECT refused for its token is renewed (``renew``) and retried on the same node; a
route whose every node failed asks ``live_brokers`` (``GET /v1/brokers``) for a fresh list.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from client.route import BrokerRoute, Endpoint

__all__ = ["BrokerConnection"]

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0
_KEEPALIVE_S = 30

MessageHandler = Callable[[paho.Client, object, paho.MQTTMessage], None]


class _Outcome(enum.Enum):
    """How one connection attempt ended."""

    FAILED = "failed"  # not reached, or closed before its CONNACK
    REFUSED = "refused"  # CONNACK refused the token
    ENDED = "ended"  # accepted, then lost
    STOPPED = "stopped"  # ``stop``


@dataclass
class _Attempt:
    """One paho client and what its broker answered (set on paho's thread)."""

    client: paho.Client
    password: str
    accepted: bool = False
    refused: bool = False


def _where(endpoint: Endpoint) -> str:
    return f"{endpoint['host']}:{endpoint['port']}"


class BrokerConnection:
    """Connects ``client_id`` to the route's nodes in turn until ``stop``; ``connected`` while it is."""

    def __init__(
        self,
        route: BrokerRoute,
        *,
        client_id: str,
        username: str,
        password: Callable[[], str],
        transport: Literal["tcp", "websockets"],
        connected: threading.Event,
        on_accepted: Callable[[paho.Client], None],
        on_message: MessageHandler,
        renew: Callable[[str], bool],
        live_brokers: Callable[[], list[Endpoint] | None],
    ) -> None:
        """``renew(refused_token)`` gets new tokens (``False``: signed out, stop); ``live_brokers`` asks."""
        self.route = route
        self.connected = connected
        self._client_id = client_id
        self._username = username
        self._password = password
        self._transport = transport
        self._on_accepted = on_accepted
        self._on_message = on_message
        self._renew = renew
        self._live_brokers = live_brokers
        self._lock = threading.Lock()
        self._attempt: _Attempt | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # the current attempt's connection ended, or ``stop``
        self._thread = threading.Thread(target=self._run, name="hubbub-client-mqtt", daemon=True)

    @property
    def client(self) -> paho.Client | None:
        """The paho client of the current attempt (connected or not)."""
        attempt = self._attempt
        return attempt.client if attempt is not None else None

    def start(self) -> None:
        """Start connecting in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Close the connection (a clean DISCONNECT) and stop trying; waits for the thread."""
        with self._lock:
            self._stopping.set()
            self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self.connected.clear()

    def _run(self) -> None:
        while not self._stopping.is_set():
            outcome = self._hold(self.route.current)
            if outcome is _Outcome.STOPPED:
                return
            if outcome is _Outcome.REFUSED:
                attempt = self._attempt
                if attempt is None or not self._renew(attempt.password):
                    logger.warning("MQTT refused this device's token and no new one came: not reconnecting")
                    return
                continue  # the same node, with the new token
            if outcome is _Outcome.ENDED:
                logger.info("MQTT connection to %s ended; moving on", _where(self.route.current))
            step = self.route.failed()
            if self._stopping.wait(step.delay_s):
                return
            if step.ask_registry:
                brokers = self._live_brokers()
                if brokers:
                    self.route.replace(brokers)

    def _new_client(self, password: str) -> paho.Client:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv311,
            transport=self._transport,
            clean_session=True,
            reconnect_on_failure=False,  # the route decides where the next attempt goes
        )
        client.username_pw_set(self._username, password)
        client.connect_timeout = _CONNECT_TIMEOUT_S
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._on_message
        return client

    def _hold(self, endpoint: Endpoint) -> _Outcome:
        """Connect to ``endpoint`` and hold the connection until it ends or ``stop``."""
        password = self._password()
        client = self._new_client(password)
        if self._transport == "websockets":
            url = httpx.URL(endpoint["ws_url"])
            client.ws_set_options(path=url.path)
            host, port = url.host, url.port or 80
        else:
            host, port = endpoint["host"], int(endpoint["port"])
        with self._lock:
            if self._stopping.is_set():
                return _Outcome.STOPPED
            attempt = self._attempt = _Attempt(client, password)
            self._wake.clear()
        try:
            client.connect(host, port, keepalive=_KEEPALIVE_S)
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out, a WebSocket handshake refused
            logger.info("could not reach MQTT at %s (%r)", _where(endpoint), exc)
            return _Outcome.STOPPED if self._stopping.is_set() else _Outcome.FAILED
        client.loop_start()
        self._wake.wait()
        if self._stopping.is_set():
            client.disconnect()
            client.loop_stop()
            return _Outcome.STOPPED
        client.loop_stop()
        if attempt.refused:
            return _Outcome.REFUSED
        if attempt.accepted:
            self.route.connected()
            return _Outcome.ENDED
        return _Outcome.FAILED

    def _current(self, client: paho.Client) -> _Attempt | None:
        with self._lock:
            attempt = self._attempt
        return attempt if attempt is not None and attempt.client is client else None

    def _connected(self, client: paho.Client, _u: object, _f: object, code: ReasonCode, _p: object) -> None:
        attempt = self._current(client)
        if attempt is None:
            return
        if code.is_failure:
            logger.info("MQTT connection refused (%s); renewing the token", code)
            attempt.refused = True
            client.disconnect()
            return
        attempt.accepted = True
        self._on_accepted(client)
        self.connected.set()

    def _disconnected(self, client: paho.Client, _u: object, _f: object, _c: ReasonCode, _p: object) -> None:
        if self._current(client) is not None:
            self.connected.clear()
            self._wake.set()
