"""``hubbub api`` in a cluster: REST anywhere, with messaging through NATS and login discovery.

- Sends (``MessageSubmitter``): a ``MessagingCore`` of its own runs the same ingest checks as a
  broker (validation, rate, membership, ids) and offers the message to ``HUBBUB_ACCEPTED`` with
  ``Hubbub-Reply-To: hubbub.reply.<node name>``; the shard's persister answers the commit result
  there (``ReplyListener`` -> ``MessagingCore.commit_replied``), which the REST call waits for.
- Conversation events, membership changes and ended devices (``InboxPublisher``,
  ``LiveConnections``): published on ``hubbub.inbox.<uid>``, ``hubbub.membership.changed`` and
  ``hubbub.device.ended`` (``NatsInboxes``).
- Presence reads (``PresenceView``): the presence mirror of the whole cluster.
- Login, refresh and ``GET /v1/brokers`` answer the healthy broker nodes, fewest connections
  first, from the node registry (``NodeDirectory.brokers``), and the settings' broker endpoint
  while the registry names none.

``/healthz`` is 503 while the NATS connection or a supervised loop is down.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import async_sessionmaker

from api import BrokerEndpoint, SqlDirectory
from api.app import create_app
from cluster.accepted import NatsAcceptedLog, ensure_accepted_stream
from cluster.committed import ReplyListener
from cluster.inbox import NatsInboxes, follow_membership_changes, forget_memberships_on_reconnect
from cluster.registry import Endpoints, NodeDirectory
from config import Settings
from hubbub import subjects
from launcher.cluster_node import cluster_node, retrying
from launcher.cluster_parts import presence_mirror
from launcher.foundation import foundation, ingest_limits, shard_map
from launcher.http import bind_socket
from launcher.push import shared_vapid_key
from launcher.serving import WS_PATH, http_url, serve_until_stopped, uvicorn_server
from messaging import LoopClock, MessagingCore

__all__ = ["BrokerDiscovery", "run_cluster_api"]

logger = logging.getLogger(__name__)


class BrokerDiscovery:
    """Where devices connect: the registry's healthy broker nodes, least loaded first."""

    def __init__(self, directory: NodeDirectory) -> None:
        self._directory = directory

    @property
    def max_age_s(self) -> float:
        """How stale an answer may be: the registry view's refresh period."""
        return self._directory.refresh_s

    def __call__(self) -> list[BrokerEndpoint]:
        """The endpoints of every healthy broker node with complete ones, least loaded first."""
        found = []
        for node in self._directory.brokers():
            endpoints = node.endpoints
            if endpoints.mqtt_host is None or endpoints.mqtt_port is None or endpoints.ws_url is None:
                logger.warning("broker %s registered without its endpoints; not named", node.node_id)
                continue
            found.append(
                BrokerEndpoint(host=endpoints.mqtt_host, port=endpoints.mqtt_port, ws_url=endpoints.ws_url)
            )
        return found


class _NoDevicesHere:
    """``DeviceConnections`` of a process that holds no device: every event goes over NATS."""

    def __init__(self, inboxes: NatsInboxes) -> None:
        self._inboxes = inboxes

    def to_inbox(
        self, user_id: int, payload: bytes, *, only_device: str | None = None, skip_device: str | None = None
    ) -> int:
        """To the nodes holding the user's devices."""
        return self._inboxes.to_inbox(user_id, payload, only_device=only_device, skip_device=skip_device)

    def set_presence(self, user_id: int, payload: bytes) -> None:
        """No retained topics here (the presence writers decide; brokers keep the topics)."""
        del user_id, payload

    def is_connected(self, device_id: str) -> bool:
        """No device connects to an API node."""
        del device_id
        return False

    def drop(self, device_id: str) -> None:
        """Nothing to close here (``end_device`` reaches the brokers)."""
        del device_id


async def run_cluster_api(settings: Settings) -> None:
    """The REST API as a cluster node: registered, discovering brokers, healthy only when NATS is."""
    async with foundation(settings) as core, cluster_node(settings, "api") as node:
        host = settings.advertised_host
        fallback = BrokerEndpoint(
            host=host, port=settings.mqtt_port, ws_url=f"ws://{host}:{settings.broker_ws_port}{WS_PATH}"
        )
        discovery = BrokerDiscovery(await node.directory())
        connection = node.connection
        await retrying(
            "creating the accepted stream",
            lambda: ensure_accepted_stream(connection.js, settings.nats_replicas),
        )
        directory = SqlDirectory(async_sessionmaker(core.engine, expire_on_commit=False))
        inboxes = NatsInboxes(connection.client)
        mirror = await presence_mirror(connection, settings, directory)
        node.supervisor.watch("presence-mirror", running=lambda: mirror.running)
        messaging = MessagingCore(
            connections=_NoDevicesHere(inboxes),
            directory=directory,
            accepted=NatsAcceptedLog(connection.js, shard_map(settings), reply_to=subjects.reply(node.name)),
            ids=core.ids,
            limits=ingest_limits(settings),
            presence_grace_s=settings.presence_grace_s,
            clock=LoopClock(),
        )
        await follow_membership_changes(
            connection.client, messaging.membership_changed
        )  # its own ingest's cache
        forget_memberships_on_reconnect(connection.state, messaging.memberships_lost)
        replies = ReplyListener(connection.client, node.name, messaging.commit_replied)
        await replies.start()
        sock = bind_socket(settings.bind, settings.http_port)
        app = create_app(
            settings,
            tokens=core.tokens,
            engine=core.engine,
            reads=core.reads,
            ids=core.ids,
            broker=fallback,
            messages_store=core.store,
            inbox=inboxes,
            submitter=messaging,
            presence_view=mirror,
            live_connections=inboxes,
            metrics=node.render_metrics_now,
            discover_brokers=discovery,
            brokers_max_age_s=discovery.max_age_s,
            health_problems=node.health.problems,
            vapid_public_key=(
                await retrying(
                    "sharing the VAPID key", lambda: shared_vapid_key(node.connection.js, settings)
                )
            ).public_key,
        )
        await node.register(Endpoints(http_url=http_url(sock)), snowflake_id=settings.node_id)
        try:
            await serve_until_stopped(uvicorn_server(app, settings), sock)
        finally:
            await replies.stop()
            await messaging.close()
            await mirror.stop()
            await inboxes.close()
