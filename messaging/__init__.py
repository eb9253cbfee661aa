"""The transport-free messaging core: ingest, fan-out, presence, membership (no MQTT, no SQL)."""

from messaging.clock import Clock, LoopClock
from messaging.core import MessagingCore
from messaging.ingest import IngestLimits

__all__ = ["Clock", "IngestLimits", "LoopClock", "MessagingCore"]
