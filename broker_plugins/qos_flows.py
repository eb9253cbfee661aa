"""The answers of QoS 1 and 2 after a PUBLISH: what each changes in the session, what goes back.

The handler (``handler.py``) frames packets and dispatches them; this is the state machine of the
acknowledgements [MQTT-4.3], kept apart so each reads on its own. The platform's devices use QoS
1 (PUBACK, read on the hot path by the handler itself); QoS 2's four-packet exchange is rare.
Compiled with the handler (``build_compiled.py``).
"""

from __future__ import annotations

from broker_plugins.codec import ack_packet
from broker_plugins.sessions import MqttSession

__all__ = ["PUBACK", "PUBCOMP", "PUBREC", "PUBREL", "answer_flow_packet", "inbound_ack"]

PUBACK, PUBREC, PUBREL, PUBCOMP = 4, 5, 6, 7


def inbound_ack(qos: int, packet_id: int) -> bytes:
    """The acknowledgement of a client's PUBLISH at ``qos`` 1 (PUBACK) or 2 (PUBREC)."""
    return ack_packet(PUBACK if qos == 1 else PUBREC, packet_id)


def answer_flow_packet(session: MqttSession, packet_type: int, packet_id: int) -> bytes | None:
    """A client's PUBREC, PUBREL or PUBCOMP for ``packet_id``: the session moves on; the answer to write.

    PUBREC (a QoS 2 delivery received): the message is released, PUBREL goes back. PUBREL (the
    client's QoS 2 PUBLISH released): its packet id is forgotten, PUBCOMP goes back. PUBCOMP (a
    delivery complete): nothing goes back, and room is made for queued messages (the caller sends
    them). An unknown packet id changes nothing and is answered all the same, as the spec asks.
    """
    if packet_type == PUBREC:
        message = session.sent(packet_id)
        if message is not None:
            message.released = True
        return ack_packet(PUBREL, packet_id)
    if packet_type == PUBREL:
        session.release_qos2(packet_id)
        return ack_packet(PUBCOMP, packet_id)
    session.acknowledge(packet_id)
    return None
