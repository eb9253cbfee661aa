"""The broker counts what it sheds; the QoS 0 case is checked on a real broker in test_protocol_delivery."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from broker_plugins.acl import TopicAcl
from broker_plugins.routing import RoutingBroker
from broker_plugins.sessions import MAX_QUEUED, Identity, MqttSession
from tests.messaging.doubles import FakeDirectory


def test_messages_beyond_a_full_session_queue_are_counted_and_exposed() -> None:
    broker = RoutingBroker(TopicAcl(FakeDirectory()))
    away = MqttSession("away", Identity("service:t", None), clean_session=False)  # persistent, offline
    broker.sessions["away"] = away
    broker.index.add("shed/topic", away, 1)
    for number in range(MAX_QUEUED + 3):
        broker.route("shed/topic", number.to_bytes(4, "big"), 1)
    assert (broker.shed.queue_full, broker.shed.qos0_stalled) == (3, 0)
    registry = CollectorRegistry()
    registry.register(broker.collector())
    text = generate_latest(registry).decode()
    assert 'hubbub_mqtt_shed_total{reason="queue_full"} 3.0' in text
    assert 'hubbub_mqtt_shed_total{reason="qos0_stalled"} 0.0' in text
