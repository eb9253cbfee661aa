"""``hubbub broker`` in a cluster: device connections, ingest into JetStream, delivery and presence.

One broker node is composed of:

- the MQTT server (TCP, and WebSocket on ``broker_ws_port``, which also serves ``/healthz`` and
  ``/metrics``), reporting to ``NodeDeviceEvents``: the first device of a user subscribes the
  node to ``hubbub.inbox.<uid>`` (``NodeInbox``; the CONNACK waits for it), then the core hears;
- the ``MessagingCore`` with ``NatsAcceptedLog`` (a PUBLISH is acknowledged once JetStream holds
  the message), ``NodeConnections`` (events for a device here go straight to it, any other over
  NATS) and ``NodePresence`` (devices reported to their shard's presence writer, decisions applied
  to the retained ``presence/{uid}`` topics);
- the presence writers of the user shards this node leases (group ``presence``);
- ``hubbub.device.ended`` and ``hubbub.membership.changed`` (``NodeInbox``), and what a NATS gap
  lost of them: every cached membership forgotten, every device here checked against the store;
- after each reconnect of its NATS connection, a ``resync`` event to its devices (``InboxResync``);
- the registry heartbeat with its endpoints and connection count.

Persisting and pushing are other processes' (``hubbub persister``, ``hubbub notifier``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from api import SqlDeviceSessions, SqlDirectory
from broker_plugins import HubbubBroker, WebSocketBridge
from cluster.accepted import NatsAcceptedLog, ensure_accepted_stream
from cluster.inbox import NatsInboxes, forget_memberships_on_reconnect
from cluster.inbox_resync import InboxResync
from cluster.node_inbox import NodeConnections, NodeDeviceEvents, NodeInbox
from cluster.presence_node import NodePresence
from cluster.presence_writer import PresenceWriters, open_presence_leases
from cluster.registry import Endpoints
from cluster.session_recheck import SessionRecheck
from config import Settings
from hubbub.presence import Publish
from hubbub.sessions import SignedInDevices
from launcher.cluster_node import ClusterNode, cluster_node, retrying
from launcher.cluster_parts import presence_bucket, presence_mirror
from launcher.foundation import Foundation, foundation, ingest_limits, mqtt_server, shard_map
from launcher.http import bind_socket
from launcher.serving import WS_PATH, http_url, serve_until_stopped, uvicorn_server
from messaging import LoopClock, MessagingCore
from messaging.last_active import LastActiveWriter
from messaging.presence import PresenceTracker
from persister.sql_database import autocommit_reads

__all__ = ["run_cluster_broker"]

_LAST_ACTIVE_FLUSH_S = 10.0


def _connections(broker: HubbubBroker) -> int:
    return sum(1 for session in broker.sessions.values() if session.handler is not None)


def _devices(broker: HubbubBroker) -> list[tuple[int, str]]:
    """(user id, device id) of every device connected to this node (services are not devices)."""
    return [
        (session.user_id, session.client_id)
        for session in broker.sessions.values()
        if session.handler is not None and session.user_id is not None
    ]


@dataclass(eq=False)  # registered by identity
class _ResyncCollector(Collector):
    """``/metrics`` of the node's resyncs (rounds begun, users told, users still owed) and rechecks."""

    node: str
    resync: InboxResync
    recheck: SessionRecheck

    def collect(self) -> Iterator[Metric]:
        """The three figures, read when ``/metrics`` is scraped."""
        rounds = CounterMetricFamily(
            "hubbub_inbox_resync_rounds", "Resync rounds begun (one per NATS reconnect).", labels=["node"]
        )
        rounds.add_metric([self.node], self.resync.rounds)
        told = CounterMetricFamily(
            "hubbub_inbox_resync_told", "Users told to catch up after a NATS reconnect.", labels=["node"]
        )
        told.add_metric([self.node], self.resync.told)
        owed = GaugeMetricFamily("hubbub_inbox_resync_owed", "Users still to be told.", labels=["node"])
        owed.add_metric([self.node], self.resync.owed)
        checked = CounterMetricFamily(
            "hubbub_session_recheck_checked",
            "Devices here checked against the account store after a NATS reconnect.",
            labels=["node"],
        )
        checked.add_metric([self.node], self.recheck.checked)
        ended = CounterMetricFamily(
            "hubbub_session_recheck_ended",
            "Devices closed by those checks: signed out while NATS was out of reach.",
            labels=["node"],
        )
        ended.add_metric([self.node], self.recheck.ended)
        yield from (rounds, told, owed, checked, ended)


@asynccontextmanager
async def _broker_node(core: Foundation, node: ClusterNode) -> AsyncIterator[HubbubBroker]:
    """The MQTT server with the messaging core, delivery and presence of a broker node, running."""
    settings, connection = core.settings, node.connection
    shards = shard_map(settings)
    sessions = async_sessionmaker(core.engine, expire_on_commit=False)
    directory = SqlDirectory(sessions)
    # The signed-in check at CONNECT is one SELECT per batch: in autocommit, without a BEGIN and a
    # ROLLBACK around it (two of its four round trips; every reconnecting device waits for them).
    # hubbub.device.ended reaches every node, so the devices found signed in are remembered.
    signed_in = SignedInDevices(SqlDeviceSessions(async_sessionmaker(autocommit_reads(core.engine))))
    broker = mqtt_server(core, directory, signed_in)
    await retrying(
        "creating the accepted stream", lambda: ensure_accepted_stream(connection.js, settings.nats_replicas)
    )
    inboxes = NatsInboxes(connection.client)
    mirror = await presence_mirror(connection, settings, directory)
    presence = NodePresence(connection, node_id=node.name, shards=shards, connections=broker, mirror=mirror)
    messaging = MessagingCore(
        connections=NodeConnections(broker, inboxes),
        directory=directory,
        accepted=NatsAcceptedLog(connection.js, shards),
        ids=core.ids,
        limits=ingest_limits(settings),
        presence_grace_s=settings.presence_grace_s,
        clock=LoopClock(),
        presence=presence,
    )
    live = signed_in.forget_on_end(messaging)
    node_inbox = NodeInbox(connection.client, broker, live=live, forget=messaging.membership_changed)
    forget_memberships_on_reconnect(connection.state, messaging.memberships_lost)
    resync = InboxResync(connection.state, node_inbox, broker, rate=settings.resync_users_per_second)
    recheck = SessionRecheck(
        connection.state,
        lambda: _devices(broker),
        signed_in,
        signed_in.forget_all,
        live,
        rate=settings.resync_users_per_second,
    )
    last_active = LastActiveWriter(directory)

    def decider(publish: Publish) -> PresenceTracker:
        return PresenceTracker(grace_s=settings.presence_grace_s, publish=publish, clock=LoopClock())

    writers = PresenceWriters(
        connection,
        await presence_bucket(connection, settings),
        await node.directory(),
        leases=await retrying(
            "opening the presence leases",
            lambda: open_presence_leases(
                connection.js, ttl_s=settings.lease_ttl_s, replicas=settings.nats_replicas
            ),
        ),
        owner_id=node.name,
        shards=settings.presence_shards,
        lease_ttl_s=settings.lease_ttl_s,
        new_decider=decider,
        record_last_active=last_active.record,
    )
    try:
        await presence.start()
        await node_inbox.start()
        await writers.start()
        resync.start()
        recheck.start()
        node.collector.leases["presence"] = writers.leases
        node.supervisor.watch("presence-mirror", running=lambda: mirror.running)
        node.supervisor.watch("presence-reports", running=lambda: presence.running)
        node.supervisor.watch("presence-writers", running=lambda: writers.running)
        node.supervisor.watch("inbox-resync", running=lambda: resync.running)
        node.supervisor.watch("session-recheck", running=lambda: recheck.running)
        node.metrics.register(broker.collector())
        node.metrics.register(_ResyncCollector(node.name, resync, recheck))
        node.collector.connections = lambda: _connections(broker)
        node.collector.deliveries = lambda: node_inbox.counts.delivered
        await broker.start(events=NodeDeviceEvents(messaging, node_inbox))
        yield broker
    finally:
        await node.close()  # deregistered before devices go
        # The presence shards move on at once (or after the TTL, without NATS).
        await node.leave("releasing the presence leases", writers.stop, lambda: writers.stop(release=False))
        await broker.shutdown()
        await messaging.close()
        await asyncio.gather(resync.stop(), recheck.stop())
        await node_inbox.close()
        await presence.close()
        await mirror.stop()
        await last_active.close(_LAST_ACTIVE_FLUSH_S)
        await inboxes.close()


async def run_cluster_broker(settings: Settings) -> None:
    """A broker node: MQTT over TCP and WebSocket, registered with its endpoints and load."""
    async with (
        foundation(settings) as core,
        cluster_node(settings, "broker") as node,
        _broker_node(core, node) as broker,
    ):
        sock = bind_socket(settings.bind, settings.broker_ws_port)
        host = settings.advertised_host
        ws_url = f"ws://{host}:{sock.getsockname()[1]}{WS_PATH}"
        app = Starlette(routes=[WebSocketRoute(WS_PATH, WebSocketBridge(broker).serve), *node.routes()])
        endpoints = Endpoints(
            mqtt_host=host, mqtt_port=broker.mqtt_port, ws_url=ws_url, http_url=http_url(sock)
        )
        await node.register(
            endpoints, connections=lambda: _connections(broker), snowflake_id=settings.node_id
        )
        await serve_until_stopped(
            uvicorn_server(app, settings), sock, mqtt=f"{settings.bind}:{broker.mqtt_port}", ws=ws_url
        )
