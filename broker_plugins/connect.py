r"""Reading a connection's CONNECT: the one packet still decoded by amqtt's packet classes.

Identical checks and CONNACK refusals to amqtt 0.12.1's ``BrokerProtocolHandler.init_from_connect``
[MQTT-3.1.0-1, 3.1.2-1, 3.1.2-3, 3.1.2-22, 3.1.3-8, 3.2.2-4], using amqtt's public
``ConnectPacket`` decoder (read once per connection, so its cost does not matter). What it
returns is a plain ``Connect``: nothing of amqtt travels further into the broker.

A will topic is checked like a PUBLISH topic (``routing.check_topic``) and for the strings
amqtt's decoder could not read: ``decode_string`` turns invalid UTF-8 into ``str(bytes)``
(``"b'a/\xff'"``) instead of failing, so such a string is decoded again here. A bad will
topic closes the connection without CONNACK [MQTT-1.5.3-1, 1.5.3-2, 4.7.1-1, 4.7.3-1]: 3.1.1
has no CONNACK code for it, and a malformed packet is answered by closing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import BAD_USERNAME_PASSWORD, IDENTIFIER_REJECTED, UNACCEPTABLE_PROTOCOL_VERSION
from amqtt.mqtt.connect import ConnectPacket

from broker_plugins.codec import connack_packet
from broker_plugins.routing import check_topic
from broker_plugins.sessions import Will

__all__ = ["Connect", "read_connect"]

_MQTT_3_1_1 = 4


@dataclass(frozen=True, slots=True)
class Connect:
    """What a CONNECT asked for."""

    client_id: str  # assigned by the decoder when the client sent none (clean sessions only)
    clean_session: bool
    username: str | None
    password: str | None
    keep_alive: int
    will: Will | None
    remote: str  # "address:port", for logs


def _undecodable(text: str) -> bool:
    """Whether ``text`` is amqtt's ``str(bytes)`` fallback for a string that was not UTF-8."""
    if not text.startswith(("b'", 'b"')):
        return False
    try:
        raw = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    if not isinstance(raw, bytes):
        return False
    try:
        raw.decode()
    except UnicodeDecodeError:
        return True
    return False


def _check_strings(connect: ConnectPacket) -> None:
    """Client id, username and will topic must be UTF-8 without NUL; the will topic a topic name."""
    for name, text in (("client id", connect.client_id), ("username", connect.username)):
        if text is not None and ("\x00" in text or _undecodable(text)):
            raise MQTTError(f"{name} is not UTF-8 without NUL [MQTT-1.5.3-1, 1.5.3-2]")
    if connect.will_flag and connect.will_topic is not None:
        if _undecodable(connect.will_topic):
            raise MQTTError("will topic is not UTF-8 [MQTT-1.5.3-1]")
        check_topic(connect.will_topic)


def _refusal(connect: ConnectPacket) -> tuple[int, str] | None:
    """The CONNACK code and reason when this CONNECT must be refused before authentication."""
    if connect.proto_level != _MQTT_3_1_1:
        return UNACCEPTABLE_PROTOCOL_VERSION, f"protocol level {connect.proto_level}"
    if not connect.username_flag and connect.password_flag:
        return BAD_USERNAME_PASSWORD, "password without username"
    if connect.username_flag and connect.username is None:
        return BAD_USERNAME_PASSWORD, "username flag without username"
    if connect.password_flag and connect.password is None:
        return BAD_USERNAME_PASSWORD, "password flag without password"
    if (
        connect.clean_session_flag is False
        and connect.payload is not None
        and connect.payload.client_id_is_random
    ):
        return IDENTIFIER_REJECTED, "no client id with clean session 0 [MQTT-3.1.3-8]"
    return None


async def read_connect(reader: ReaderAdapter, writer: WriterAdapter) -> Connect:
    """Read and check the CONNECT; a refused one gets its CONNACK and raises ``MQTTError``."""
    connect = await ConnectPacket.from_stream(reader)
    if connect.variable_header is None or connect.payload is None:
        raise MQTTError("CONNECT without variable header or payload")
    if connect.payload.client_id is None:
        raise MQTTError("[MQTT-3.1.3-3] client identifier must be present")
    if connect.variable_header.will_flag and (
        connect.payload.will_topic is None or connect.payload.will_message is None
    ):
        raise MQTTError("will flag set, but will topic/message not present")
    if connect.variable_header.reserved_flag:
        raise MQTTError("[MQTT-3.1.2-3] CONNECT reserved flag must be 0")
    if connect.proto_name != "MQTT":
        raise MQTTError(f"[MQTT-3.1.2-1] incorrect protocol name {connect.proto_name!r}")
    _check_strings(connect)
    remote_address, remote_port = writer.get_peer_info() or ("unknown", 0)
    refusal = _refusal(connect)
    if refusal is not None:
        code, reason = refusal
        writer.write(connack_packet(session_present=False, return_code=code))
        await writer.close()
        raise MQTTError(f"CONNECT refused: {reason}")
    will = (
        Will(
            connect.will_topic,
            bytes(connect.will_message),
            connect.will_qos or 0,
            bool(connect.will_retain_flag),
        )
        if connect.will_flag
        else None
    )
    return Connect(
        client_id=connect.client_id,
        clean_session=bool(connect.clean_session_flag),
        username=connect.username,
        password=connect.password,
        keep_alive=max(connect.keep_alive, 0),
        will=will,
        remote=f"{remote_address}:{remote_port}",
    )
