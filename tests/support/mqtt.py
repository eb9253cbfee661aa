"""A paho-mqtt device for tests: every wait is on an event with a deadline, never a sleep.

It also holds the server to its published contract: every inbox event and presence payload a
device receives is validated against the schemas of ``docs/asyncapi.json`` (``check_contract``).
A message that breaks it fails ``next_message`` when the test takes it, and ``close`` fails for
any the test never took.
"""

from __future__ import annotations

import functools
import json
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import jsonschema
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from hubbub import topics
from hubbub.asyncapi import inbox_message_name
from hubbub.topics import TopicKind
from launcher.asyncapi import DOCUMENT_PATH

if TYPE_CHECKING:
    from tests.support.api import Login
    from tests.support.platform import Platform

__all__ = ["NO_CONNACK", "Device", "Received", "check_contract"]

WAIT_S = 15.0
NO_CONNACK = -1  # the server closed the connection without answering the CONNECT


@functools.cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    return document


@functools.cache
def _validator(message_name: str) -> jsonschema.protocols.Validator:
    """The validator of one message of the document, its refs resolved inside the document."""
    document = _document()
    payload = document["components"]["messages"][message_name]["payload"]
    schema = {**payload, "components": document["components"]}  # "#/components/..." resolves here
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def check_contract(topic: str, payload: bytes) -> str | None:
    """Why ``payload`` received on ``topic`` breaks ``docs/asyncapi.json``, or None if it meets it.

    Inbox events are checked against the message of their ``kind``, presence against the
    presence message; other topics (tests' own, internal) are not part of the device contract.
    """
    parsed = topics.parse(topic)
    if parsed is None or parsed.kind not in {TopicKind.INBOX, TopicKind.PRESENCE}:
        return None
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return f"{topic}: not JSON: {payload[:200]!r}"
    if parsed.kind is TopicKind.PRESENCE:
        name = "presence"
    else:
        kind = body.get("kind") if isinstance(body, dict) else None
        name = inbox_message_name(str(kind))
        if name not in _document()["components"]["messages"]:
            return f"{topic}: an event of kind {kind!r}, which the contract does not define: {body}"
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(body))
    return (
        None
        if error is None
        else f"{topic}: {name} breaks the contract at {list(error.path)}: {error.message}"
    )


@dataclass(frozen=True)
class Received:
    """One message a device got."""

    topic: str
    payload: bytes
    retain: bool
    violation: str | None = None


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
        self.violations: list[str] = []
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
        payload = bytes(message.payload)
        violation = check_contract(message.topic, payload)
        if violation is not None:
            self.violations.append(violation)
        self.messages.put(Received(message.topic, payload, message.retain, violation))

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
            received = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None
        assert received.violation is None, received.violation
        return received

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread; fail if anything received broke the contract."""
        self.client.disconnect()
        self.client.loop_stop()
        assert not self.violations, self.violations
