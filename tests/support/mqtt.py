"""A paho-mqtt device for tests: every wait is on an event with a deadline, never a sleep."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

if TYPE_CHECKING:
    from tests.support.api import Login
    from tests.support.platform import Platform

__all__ = ["NO_CONNACK", "Device", "Received"]

WAIT_S = 15.0
NO_CONNACK = -1  # the server closed the connection without answering the CONNECT


@dataclass(frozen=True)
class Received:
    """One message a device got."""

    topic: str
    payload: bytes
    retain: bool


class Device:
    """One MQTT connection (TCP or WebSocket) driven from a test thread."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None,
        password: str | None,
        transport: Literal["tcp", "websockets"] = "tcp",
        ws_path: str = "/mqtt",
        keepalive: int = 30,
    ) -> None:
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            transport=transport,
            clean_session=True,
            reconnect_on_failure=False,
        )
        if transport == "websockets":
            self.client.ws_set_options(path=ws_path)
        if username is not None:
            self.client.username_pw_set(username, password)
        self._host, self._port, self._keepalive = host, port, keepalive
        self._connack: queue.Queue[int] = queue.Queue()
        self._got_connack = False
        self._subacks: dict[int, queue.Queue[list[int]]] = {}
        self.disconnected = threading.Event()
        self.messages: queue.Queue[Received] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    @classmethod
    def for_ws_url(cls, ws_url: str, **kwargs: Any) -> Device:  # noqa: ANN401 - the constructor's own keywords
        """A WebSocket device for ``ws://host:port/path``."""
        url = urlparse(ws_url)
        assert url.hostname is not None
        assert url.port is not None
        return cls(host=url.hostname, port=url.port, transport="websockets", ws_path=url.path, **kwargs)

    @classmethod
    def for_login(cls, platform: Platform, login: Login, transport: str = "tcp", **overrides: Any) -> Device:  # noqa: ANN401
        """A device of ``login`` on ``platform`` (TCP or WebSocket); ``overrides`` replace credentials."""
        credentials: dict[str, Any] = {
            "client_id": login.device_id,
            "username": login.user_id,
            "password": login.access_token,
        } | overrides
        if transport == "websockets":
            return cls.for_ws_url(platform.ws_url, **credentials)
        return cls(host=platform.mqtt_host, port=platform.mqtt_port, **credentials)

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, code: ReasonCode, _p: object) -> None:
        self._got_connack = True
        self._connack.put(code.value)

    def _on_subscribe(
        self, _c: paho.Client, _u: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        self._subacks.setdefault(mid, queue.Queue()).put([code.value for code in codes])

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        self.messages.put(Received(message.topic, bytes(message.payload), message.retain))

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, _code: ReasonCode, _p: object) -> None:
        self.disconnected.set()
        if not self._got_connack:
            self._connack.put(NO_CONNACK)

    def connect(self) -> int:
        """Connect and return the CONNACK return code (0 accepted, 5 not authorised...)."""
        self.client.connect(self._host, self._port, keepalive=self._keepalive)
        self.client.loop_start()
        try:
            return self._connack.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError("no CONNACK") from None

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        """Subscribe and return the SUBACK return codes (0x80 = refused)."""
        _, mid = self.client.subscribe(topic, qos)
        assert mid is not None
        try:
            return self._subacks.setdefault(mid, queue.Queue()).get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError(f"no SUBACK for {topic}") from None

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish and wait until the broker has it (PUBACK for QoS 1)."""
        info = self.client.publish(topic, payload, qos)
        info.wait_for_publish(timeout=WAIT_S)

    def next_message(self, timeout: float = WAIT_S) -> Received:
        """The next message received, or an assertion failure after ``timeout``."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
