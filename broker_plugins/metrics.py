"""What the broker drops on purpose, counted, and shown in the Prometheus ``/metrics`` output.

The broker sheds two kinds of messages rather than buffer without bound: a QoS 0 PUBLISH to
a client that stopped reading (``handler.write_qos0``), and a QoS 1/2 message for a session
whose queue is full (``sessions.MAX_QUEUED``, offline or beyond its in-flight window). Both
are deliberate, and both must be visible: a rising count means a stalled or absent client.

The counts are plain integers bumped on the delivery path (a ``prometheus_client.Counter``
takes a lock per ``inc``); ``BrokerCollector`` reads them when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["BrokerCollector", "ShedCounts"]


class ShedCounts:
    """Messages shed since start: QoS 0 to a stalled client, and QoS 1/2 to a full session queue."""

    __slots__ = ("qos0_stalled", "queue_full")

    def __init__(self) -> None:
        self.qos0_stalled = 0
        self.queue_full = 0


class BrokerCollector(Collector):
    """``hubbub_mqtt_shed_total{reason="qos0_stalled"|"queue_full"}`` from a ``ShedCounts``."""

    def __init__(self, counts: ShedCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The shed counter, one sample per reason."""
        family = CounterMetricFamily(
            "hubbub_mqtt_shed",
            "Messages the MQTT server dropped rather than buffer: QoS 0 to a client that stopped "
            "reading, or QoS 1/2 to a session whose queue was full.",
            labels=["reason"],
        )
        family.add_metric(["qos0_stalled"], self._counts.qos0_stalled)
        family.add_metric(["queue_full"], self._counts.queue_full)
        yield family
