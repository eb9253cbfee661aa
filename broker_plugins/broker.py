"""The Hubbub broker: amqtt 0.12.1 with the seams a chat platform needs.

Overridden internals (amqtt is pinned to the exact version; each seam has a test):

- ``_initialize_client_session``: authenticate *before* the CONNECT may touch an existing
  session. Stock amqtt deletes a clean session, or takes over a connected one, for
  whoever sends a CONNECT with its client id — authenticated or not.
- ``stream_connected`` / ``websocket_connected``: every connection's reader is wrapped
  in ``PacketLimitReader`` so an oversized packet is refused from its fixed header.
  A connection must send its CONNECT within ``connect_timeout_s`` (stock amqtt waits
  for ever, so idle sockets could pile up).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker_plugins.limits import PacketLimitReader
from hubbub.tokens import TokenCodec

__all__ = ["BrokerOptions", "HubbubBroker"]

logger = logging.getLogger(__name__)

TCP_LISTENER = "default"
WS_LISTENER = "ws"


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """What the broker needs from the settings."""

    bind: str
    mqtt_port: int
    max_packet_bytes: int
    connect_timeout_s: float


class HubbubBroker(Broker):
    """amqtt's broker with authentication-first CONNECT and bounded packets."""

    def __init__(self, options: BrokerOptions, *, tokens: TokenCodec) -> None:
        config: dict[str, Any] = {
            "listeners": {
                TCP_LISTENER: {"type": "tcp", "bind": f"{options.bind}:{options.mqtt_port}"},
                WS_LISTENER: {"type": "external"},
            },
            "timeout_disconnect_delay": 0,
            "plugins": {
                "broker_plugins.auth.TokenAuthPlugin": {"tokens": tokens},
                "broker_plugins.acl.TopicAclPlugin": {},
            },
        }
        super().__init__(config)
        self._options = options
        # Client ids authenticated in _initialize_client_session, consumed by _authenticate.
        self._authenticated: set[str] = set()

    @property
    def mqtt_port(self) -> int:
        """The TCP port actually bound (differs from the setting when that is 0)."""
        sockets = self._servers[TCP_LISTENER].instance.sockets
        return int(sockets[0].getsockname()[1])

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """A TCP connection: bounded reader, then amqtt's session handling."""
        limited = PacketLimitReader(StreamReaderAdapter(reader), self._options.max_packet_bytes)
        await self._client_connected(listener_name, limited, StreamWriterAdapter(writer))

    async def websocket_connected(self, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """A WebSocket connection accepted by the HTTP server (see ``websocket.py``)."""
        limited = PacketLimitReader(reader, self._options.max_packet_bytes)
        await self._client_connected(WS_LISTENER, limited, writer)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await asyncio.wait_for(
                BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager),
                self._options.connect_timeout_s,
            )
        except TimeoutError:
            logger.info("no CONNECT from %s:%s in time; closing", remote_address, remote_port)
            await writer.close()
            raise NoDataError("no CONNECT in time") from None
        except (AMQTTError, MQTTError, NoDataError) as exc:
            logger.info("refused connection from %s:%s: %s", remote_address, remote_port, exc)
            await writer.close()
            raise
        if not await super()._authenticate(incoming, None):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError("CONNECT refused: not authorized")

        session = incoming
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for attribute in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive"):
                setattr(session, attribute, getattr(incoming, attribute))
            session.username = incoming.username
            session.password = incoming.password
            session.parent = 1
        else:
            incoming.parent = 0
        self._authenticated.add(session.client_id)
        return handler, session

    async def _authenticate(self, session: Session, listener: ListenerConfig | None) -> bool:
        # Already decided in _initialize_client_session, before the session was touched.
        del listener
        if session.client_id in self._authenticated:
            self._authenticated.discard(session.client_id)
            return True
        return False
