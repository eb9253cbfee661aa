"""Decoding a connection's CONNECT (MQTT 3.1.1 §3.1) from its body, in one synchronous pass.

amqtt's ``ConnectPacket.from_stream`` took a dozen awaited reads and several objects per
packet, and every device pays for its CONNECT again at each reconnect: in a reconnect storm
it was among the broker's top costs. The handler frames the packet from the bytes it was
fed (refusing an oversized one from its length, ``limits.py``) and ``decode_connect`` slices
the fields out of the body: no task, reader or coroutine per CONNECT. What it returns is a
plain ``Connect``; a refusal that gets a CONNACK raises ``ConnectRefused`` with its code.

The checks and refusals are amqtt 0.12.1's ``BrokerProtocolHandler.init_from_connect``
[MQTT-3.1.0-1, 3.1.2-1, 3.1.2-3, 3.1.2-22, 3.1.3-8, 3.2.2-4], as amqtt's decoder saw the fields:

- a payload field the body ends before is absent (amqtt read it as missing at the end of the
  stream): no client id gets a generated one (refused with a persistent session), a will
  without its topic or message closes the connection, a flagged username or password that is
  absent is refused with CONNACK 4;
- the protocol name, client id, username and will topic must be UTF-8 (the client id and
  username also without NUL), and the will topic a topic name (``routing.check_topic``): else
  the connection closes without CONNACK [MQTT-1.5.3-1, 1.5.3-2, 4.7.1-1, 4.7.3-1], as 3.1.1 has
  no CONNACK code for a malformed packet. A password that is not UTF-8 is kept as amqtt kept
  it (``str(bytes)``), so it fails as a token would;
- unlike amqtt, which left them in the stream to be read as the next packet, bytes after the
  last field close the connection (a malformed packet).
"""

from __future__ import annotations

import struct
from typing import Final

from amqtt.errors import MQTTError
from amqtt.mqtt.connack import BAD_USERNAME_PASSWORD, IDENTIFIER_REJECTED, UNACCEPTABLE_PROTOCOL_VERSION
from amqtt.utils import gen_client_id

from broker_plugins.router import ConnectRefused
from broker_plugins.routing import check_topic
from broker_plugins.sessions import Will

__all__ = ["Connect", "ConnectRefused", "decode_connect"]

_MQTT_3_1_1 = 4
_USERNAME = 0x80
_PASSWORD = 0x40
_WILL_RETAIN = 0x20
_WILL_QOS = 0x18
_WILL = 0x04
_CLEAN_SESSION = 0x02
_RESERVED = 0x01
_HEADER = struct.Struct("!BBH")  # protocol level, connect flags, keep alive
_LENGTH = struct.Struct("!H")


class Connect:
    """What a CONNECT asked for (read-only).

    A plain slotted class with its own ``__init__``, not a frozen dataclass: compiled, this
    ``__init__`` is C, where the dataclass's generated one stayed interpreted (a frozen one sets
    each field through ``object.__setattr__``): ~4 µs of every CONNECT.
    """

    __slots__ = ("clean_session", "client_id", "keep_alive", "password", "remote", "username", "will")

    def __init__(
        self,
        client_id: str,
        *,
        clean_session: bool,
        username: str | None,
        password: str | None,
        keep_alive: int,
        will: Will | None,
        remote: str,
    ) -> None:
        self.client_id: Final = client_id  # assigned by the decoder when the client sent none (clean only)
        self.clean_session: Final = clean_session
        self.username: Final = username
        self.password: Final = password
        self.keep_alive: Final = keep_alive
        self.will: Final = will
        self.remote: Final = remote  # "address:port", for logs


class _Fields:
    """A cursor over a CONNECT body's length-prefixed fields."""

    __slots__ = ("at", "body")

    def __init__(self, body: bytes, at: int) -> None:
        self.body = body
        self.at = at

    def take(self) -> bytes | None:
        """The next length-prefixed field, ``None`` if the body ends before it does."""
        end = self.at + 2
        if end > len(self.body):
            return None
        (size,) = _LENGTH.unpack_from(self.body, self.at)
        if end + size > len(self.body):
            return None
        self.at = end + size
        return self.body[end : self.at]


def _text(raw: bytes | None, name: str) -> str | None:
    """``raw`` as UTF-8 (without NUL, unless it is the will topic), or ``MQTTError``."""
    if raw is None:
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise MQTTError(f"{name} is not UTF-8 without NUL [MQTT-1.5.3-1, 1.5.3-2]") from exc
    if "\x00" in text and name != "will topic":
        raise MQTTError(f"{name} is not UTF-8 without NUL [MQTT-1.5.3-1, 1.5.3-2]")
    return text


def _password(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return str(raw)  # amqtt's fallback: no token looks like this, so it is refused as one


def _refusal(
    level: int, flags: int, username: str | None, password: str | None, *, random_id: bool
) -> tuple[int, str] | None:
    """The CONNACK code and reason when this CONNECT must be refused before authentication."""
    if level != _MQTT_3_1_1:
        return UNACCEPTABLE_PROTOCOL_VERSION, f"protocol level {level}"
    if not flags & _USERNAME and flags & _PASSWORD:
        return BAD_USERNAME_PASSWORD, "password without username"
    if flags & _USERNAME and username is None:
        return BAD_USERNAME_PASSWORD, "username flag without username"
    if flags & _PASSWORD and password is None:
        return BAD_USERNAME_PASSWORD, "password flag without password"
    if not flags & _CLEAN_SESSION and random_id:
        return IDENTIFIER_REJECTED, "no client id with clean session 0 [MQTT-3.1.3-8]"
    return None


def decode_connect(body: bytes, remote: str) -> Connect:
    """The CONNECT in ``body`` (from ``remote``, "address:port"), checked.

    Raises ``ConnectRefused`` when it must be refused with a CONNACK, ``MQTTError`` when the
    connection must close without one (a whole packet whose body ends inside its variable
    header is malformed, not a connection that ended: the handler frames it first).
    """
    fields = _Fields(body, 0)
    name = fields.take()
    if name is None or fields.at + _HEADER.size > len(body):
        raise MQTTError("CONNECT ends inside its variable header")
    level, flags, keep_alive = _HEADER.unpack_from(body, fields.at)
    fields.at += _HEADER.size
    raw_client_id = fields.take()
    will_topic, will_message = (fields.take(), fields.take()) if flags & _WILL else (None, None)
    raw_username = fields.take() if flags & _USERNAME else None
    raw_password = fields.take() if flags & _PASSWORD else None
    if flags & _WILL and (will_topic is None or will_message is None):
        raise MQTTError("will flag set, but will topic/message not present")
    if flags & _RESERVED:
        raise MQTTError("[MQTT-3.1.2-3] CONNECT reserved flag must be 0")
    if name != b"MQTT":
        raise MQTTError(f"[MQTT-3.1.2-1] incorrect protocol name {name!r}")
    if fields.at != len(body):
        raise MQTTError(f"CONNECT has {len(body) - fields.at} bytes after its last field")
    client_id = _text(raw_client_id, "client id")
    username = _text(raw_username, "username")
    topic = _text(will_topic, "will topic")
    if topic is not None:
        check_topic(topic)
    password = _password(raw_password)
    refusal = _refusal(level, flags, username, password, random_id=not client_id)
    if refusal is not None:
        raise ConnectRefused(*refusal)
    will = None
    if topic is not None and will_message is not None:
        will = Will(topic, will_message, (flags & _WILL_QOS) >> 3, bool(flags & _WILL_RETAIN))
    return Connect(
        client_id or gen_client_id(),
        clean_session=bool(flags & _CLEAN_SESSION),
        username=username,
        password=password,
        keep_alive=keep_alive,
        will=will,
        remote=remote,
    )
