"""amqtt extended for Hubbub: authentication, topic ACL, ingest and fan-out."""

from broker_plugins.broker import BrokerOptions, HubbubBroker
from broker_plugins.ingest import IngestLimits
from broker_plugins.websocket import WebSocketBridge

__all__ = ["BrokerOptions", "HubbubBroker", "IngestLimits", "WebSocketBridge"]
