"""``hubbub api`` in a cluster: REST anywhere, with messaging through NATS and login discovery.

Login answers the healthy broker node with the fewest connections from the node registry
(``NodeDirectory.best_broker``), and the settings' broker endpoint while the registry names
none. ``/healthz`` is 503 while the NATS connection or a supervised loop is down.
"""

from __future__ import annotations

import logging

from api import BrokerEndpoint, create_app
from cluster.registry import Endpoints, NodeDirectory
from config import Settings
from launcher.cluster_node import cluster_node, retrying
from launcher.detached import BrokerElsewhere
from launcher.foundation import foundation
from launcher.http import bind_socket
from launcher.push import shared_vapid_key
from launcher.serving import WS_PATH, http_url, serve_until_stopped, uvicorn_server

__all__ = ["BrokerDiscovery", "run_cluster_api"]

logger = logging.getLogger(__name__)


class BrokerDiscovery:
    """Where login sends a device: the least loaded healthy broker node of the registry."""

    def __init__(self, directory: NodeDirectory) -> None:
        self._directory = directory

    def __call__(self) -> BrokerEndpoint | None:
        """The best broker's endpoints, or ``None`` when no healthy broker has complete ones."""
        best = self._directory.best_broker()
        if best is None:
            return None
        endpoints = best.endpoints
        if endpoints.mqtt_host is None or endpoints.mqtt_port is None or endpoints.ws_url is None:
            logger.warning("broker %s registered without its endpoints; not named at login", best.node_id)
            return None
        return BrokerEndpoint(host=endpoints.mqtt_host, port=endpoints.mqtt_port, ws_url=endpoints.ws_url)


async def run_cluster_api(settings: Settings) -> None:
    """The REST API as a cluster node: registered, discovering brokers, healthy only when NATS is."""
    async with foundation(settings) as core, cluster_node(settings, "api") as node:
        host = settings.advertised_host
        fallback = BrokerEndpoint(
            host=host, port=settings.mqtt_port, ws_url=f"ws://{host}:{settings.broker_ws_port}{WS_PATH}"
        )
        discovery = BrokerDiscovery(await node.directory())
        elsewhere = BrokerElsewhere()
        sock = bind_socket(settings.bind, settings.http_port)
        app = create_app(
            settings,
            tokens=core.tokens,
            engine=core.engine,
            ids=core.ids,
            broker=fallback,
            messages_store=core.store,
            inbox=elsewhere,
            submitter=elsewhere,
            presence_view=elsewhere,
            live_connections=elsewhere,
            metrics=node.render_metrics_now,
            discover_broker=discovery,
            health_problems=node.health.problems,
            vapid_public_key=(
                await retrying(
                    "sharing the VAPID key", lambda: shared_vapid_key(node.connection.js, settings)
                )
            ).public_key,
        )
        await node.register(Endpoints(http_url=http_url(sock)), snowflake_id=settings.node_id)
        await serve_until_stopped(uvicorn_server(app, settings), sock)
