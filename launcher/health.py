"""``/healthz`` and ``/metrics`` of a cluster process: what it checks, what it counts.

``/healthz`` answers 200 ``{"status": "ok"}`` only when everything this process depends on
really works, else 503 ``{"status": "unhealthy", "problems": [...]}`` with one line per
problem: the NATS connection down (a reconnect in progress counts), a supervised loop not
running or stalled (``launcher.supervisor``: a subscription that died silently shows here), the
lease loop of a group or the registry heartbeat stopped. Load balancers and the cluster tests
read the status; people read the problems.

``/metrics`` (Prometheus text) shows, per node: device connections (brokers), deliveries, the
lag of each owned shard's consumer (messages pending in JetStream), lease owner changes and
owned shards per group, NATS reconnects, and each loop's restarts, beside whatever the
components count themselves (push counters, the broker's shed counters).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cluster.connection import ClusterConnection
from cluster.leases import ShardLeases
from hubbub import subjects
from launcher.supervisor import Supervisor

__all__ = ["ConsumerLag", "Health", "NodeCollector", "health_routes"]

logger = logging.getLogger(__name__)

Check = Callable[[], Iterable[str]]


class Health:
    """The process's checks; ``problems()`` is empty when it is healthy."""

    def __init__(self) -> None:
        self._checks: list[Check] = []

    def add(self, check: Check) -> None:
        """A check answering one line per problem (none when fine)."""
        self._checks.append(check)

    def problems(self) -> list[str]:
        """Every check's problems, in the order the checks were added."""
        return [problem for check in self._checks for problem in check()]

    @property
    def healthy(self) -> bool:
        """No check has a problem (what the registry heartbeat reports)."""
        return not self.problems()

    def watch_connection(self, connection: ClusterConnection) -> None:
        """Unhealthy while the NATS connection is down or reconnecting."""

        def check() -> Iterable[str]:
            if not connection.healthy:
                why = f" (last error: {connection.state.last_error})" if connection.state.last_error else ""
                yield f"NATS connection down{why}"

        self.add(check)

    def watch_supervisor(self, supervisor: Supervisor) -> None:
        """Unhealthy while a supervised loop is not running or stalled."""
        self.add(supervisor.problems)


def health_routes(health: Health, render_metrics: Callable[[], Awaitable[bytes]]) -> list[Route]:
    """``GET /healthz`` and ``GET /metrics`` for a Starlette app."""

    async def healthz(request: Request) -> Response:
        del request
        problems = health.problems()
        if problems:
            return JSONResponse({"status": "unhealthy", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        del request
        return Response(await render_metrics(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]


@dataclass
class ConsumerLag:
    """Messages pending per owned shard in a stream's consumers, sampled when ``/metrics`` is read.

    Reads every consumer of ``stream`` whose filter subject names one shard this process owns
    (``owned``): ``pending`` is num_pending (not yet delivered) plus num_ack_pending (delivered,
    not acked), the lag ``/metrics`` shows; ``undelivered`` is num_pending alone, what a consumer
    that stopped fetching leaves behind.
    """

    connection: ClusterConnection
    stream: str
    owned: Callable[[], Iterable[int]]
    pending: dict[int, int] = field(default_factory=dict)
    undelivered: dict[int, int] = field(default_factory=dict)

    async def sample(self) -> None:
        """Read the consumers now (a failure keeps the last values and is logged)."""
        owned = set(self.owned())
        try:
            consumers = await self.connection.js.consumers_info(self.stream)
        except (NatsError, JetStreamError, TimeoutError) as exc:
            logger.debug("reading the consumers of %s failed: %r", self.stream, exc)
            return
        pending: dict[int, int] = {}
        undelivered: dict[int, int] = {}
        for info in consumers:
            try:
                shard = subjects.parse_shard(info.config.filter_subject or "")
            except ValueError:
                continue
            if shard in owned:
                waiting = info.num_pending or 0
                undelivered[shard] = undelivered.get(shard, 0) + waiting
                pending[shard] = pending.get(shard, 0) + waiting + (info.num_ack_pending or 0)
        self.pending, self.undelivered = pending, undelivered

    async def nothing_undelivered(self) -> bool:
        """A probe: sampled now, no owned shard has messages its consumer did not fetch."""
        await self.sample()
        return not any(self.undelivered.values())


@dataclass(eq=False)  # registered in a CollectorRegistry, which hashes it
class NodeCollector(Collector):
    """The per-node cluster metrics, read from the live objects when ``/metrics`` is scraped."""

    node: str
    kind: str
    connection: ClusterConnection | None = None
    supervisor: Supervisor | None = None
    leases: dict[str, ShardLeases] = field(default_factory=dict)
    lags: list[ConsumerLag] = field(default_factory=list)
    connections: Callable[[], int] | None = None
    deliveries: Callable[[], int] | None = None

    def collect(self) -> Iterator[Metric]:
        """Every metric this node has a source for."""
        labels = ["node", "kind"]
        me = [self.node, self.kind]
        up = GaugeMetricFamily("hubbub_node_up", "This process is running (1).", labels=labels)
        up.add_metric(me, 1)
        yield up
        if self.connections is not None:
            gauge = GaugeMetricFamily("hubbub_node_connections", "Device connections held.", labels=labels)
            gauge.add_metric(me, self.connections())
            yield gauge
        if self.deliveries is not None:
            counter = CounterMetricFamily(
                "hubbub_node_deliveries", "Events handed to devices or nodes.", labels=labels
            )
            counter.add_metric(me, self.deliveries())
            yield counter
        yield from self._nats(labels, me)
        yield from self._leases()
        yield from self._loops()

    def _nats(self, labels: list[str], me: list[str]) -> Iterator[Metric]:
        if self.connection is None:
            return
        connected = GaugeMetricFamily(
            "hubbub_nats_connected", "The NATS connection is up (1).", labels=labels
        )
        connected.add_metric(me, 1 if self.connection.healthy else 0)
        yield connected
        reconnects = CounterMetricFamily("hubbub_nats_reconnects", "NATS reconnections.", labels=labels)
        reconnects.add_metric(me, self.connection.state.reconnects)
        yield reconnects

    def _leases(self) -> Iterator[Metric]:
        if self.leases:
            owned = GaugeMetricFamily("hubbub_lease_owned_shards", "Shards this node owns.", labels=["group"])
            changes = CounterMetricFamily(
                "hubbub_lease_owner_changes", "Shards gained or lost by this node.", labels=["group"]
            )
            for group, leases in sorted(self.leases.items()):
                owned.add_metric([group], len(leases.owned))
                changes.add_metric([group], leases.owner_changes)
            yield owned
            yield changes
        if self.lags:
            lag = GaugeMetricFamily(
                "hubbub_consumer_lag",
                "Messages pending for an owned shard's consumer.",
                labels=["stream", "shard"],
            )
            for sampled in self.lags:
                for shard, pending in sorted(sampled.pending.items()):
                    lag.add_metric([sampled.stream, str(shard)], pending)
            yield lag

    def _loops(self) -> Iterator[Metric]:
        if self.supervisor is None:
            return
        restarts = CounterMetricFamily("hubbub_loop_restarts", "Supervised loop restarts.", labels=["loop"])
        healthy = GaugeMetricFamily(
            "hubbub_loop_healthy", "The loop runs and progresses (1).", labels=["loop"]
        )
        for status in self.supervisor.statuses:
            restarts.add_metric([status.name], status.restarts)
            healthy.add_metric([status.name], 0 if status.problem else 1)
        yield restarts
        yield healthy
