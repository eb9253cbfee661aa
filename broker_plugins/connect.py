"""Reading a connection's CONNECT into a ``LightSession`` (amqtt's ``init_from_connect``, lighter).

Identical checks and CONNACK refusals to amqtt 0.12.1's ``BrokerProtocolHandler.init_from_connect``
[MQTT-3.1.0-1, 3.1.2-1, 3.1.2-3, 3.1.2-22, 3.1.3-8, 3.2.2-4]; the one difference is the
session class, which has no per-session ``transitions.Machine`` (see ``sessions.py``).
"""

from __future__ import annotations

from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import MQTTError
from amqtt.events import MQTTEvents
from amqtt.mqtt.connack import (
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    UNACCEPTABLE_PROTOCOL_VERSION,
    ConnackPacket,
)
from amqtt.mqtt.connect import ConnectPacket

from broker_plugins.handler import HubbubProtocolHandler
from broker_plugins.sessions import LightSession

__all__ = ["read_connect"]

_MQTT_3_1_1 = 4


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


async def read_connect(
    reader: ReaderAdapter,
    writer: WriterAdapter,
    plugins_manager: Any,  # noqa: ANN401 - amqtt PluginManager
) -> tuple[HubbubProtocolHandler, LightSession]:
    """Read and check the CONNECT; a refused one gets its CONNACK and raises ``MQTTError``."""
    connect = await ConnectPacket.from_stream(reader)
    await plugins_manager.fire_event(MQTTEvents.PACKET_RECEIVED, packet=connect)
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
    remote_address, remote_port = writer.get_peer_info() or ("unknown", 0)
    refusal = _refusal(connect)
    if refusal is not None:
        code, reason = refusal
        await ConnackPacket.build(0, code).to_stream(writer)
        await writer.close()
        raise MQTTError(f"CONNECT refused: {reason}")
    session = LightSession()
    session.client_id = connect.client_id
    session.clean_session = connect.clean_session_flag
    session.will_flag = connect.will_flag
    session.will_retain = connect.will_retain_flag
    session.will_qos = connect.will_qos
    session.will_topic = connect.will_topic
    session.will_message = connect.will_message
    session.username = connect.username
    session.password = connect.password
    session.remote_address = remote_address
    session.remote_port = remote_port
    session.ssl_object = writer.get_ssl_info()
    session.keep_alive = max(connect.keep_alive, 0)
    return HubbubProtocolHandler(plugins_manager), session
