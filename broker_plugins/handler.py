"""The per-connection protocol handler, fixed for keepalive expiry.

Stock amqtt 0.12.1 does nothing when a client stays silent past its keepalive: its
``handle_read_timeout`` is a no-op and the reader simply waits again, so a device whose
network vanished stays "connected" for ever and its presence never goes offline (amqtt
issue #308; the Eclipse Paho ``keepalive`` interoperability test fails). MQTT-3.1.2-24
says the server must disconnect a client it has heard nothing from for 1.5 times its
keepalive: the broker sets the session's read timeout to that (``broker.py``), and this
handler closes the connection when it expires, which ends the session as any dropped
connection does.
"""

from __future__ import annotations

import logging

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

__all__ = ["HubbubProtocolHandler", "keepalive_deadline"]

logger = logging.getLogger(__name__)


def keepalive_deadline(keepalive_s: int) -> int:
    """Seconds of silence after which a client is gone: 1.5 x keepalive, rounded up (0 = never)."""
    return -(-keepalive_s * 3 // 2)


class HubbubProtocolHandler(BrokerProtocolHandler):
    """Closes the connection once the client has been silent past its keepalive deadline."""

    def handle_read_timeout(self) -> None:
        """Nothing heard for 1.5 x keepalive: the client is gone."""
        logger.info(
            "keepalive expired for device_id=%s; closing", self.session.client_id if self.session else None
        )
        if self.reader is not None:
            # The reader loop then ends as on any dropped connection, and stop() closes the writer.
            self.reader.feed_eof()
