"""``hubbub broker`` in a cluster: a broker node that registers its endpoints and load.

Devices connect over MQTT (TCP) and MQTT over WebSocket on ``broker_ws_port``, which also
serves ``/healthz`` and ``/metrics``. The node heartbeats its endpoints and connection count
into the registry, so login sends devices to the least loaded healthy broker.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from broker_plugins import HubbubBroker, WebSocketBridge
from cluster.registry import Endpoints
from config import Settings
from launcher.cluster_node import cluster_node
from launcher.foundation import foundation
from launcher.http import bind_socket
from launcher.platform import one_node_messaging
from launcher.serving import WS_PATH, http_url, serve_until_stopped, uvicorn_server

__all__ = ["run_cluster_broker"]


def _connections(broker: HubbubBroker) -> int:
    return sum(1 for session in broker.sessions.values() if session.handler is not None)


async def run_cluster_broker(settings: Settings) -> None:
    """A broker node: MQTT over TCP and WebSocket, registered with its endpoints and load."""
    async with (
        foundation(settings) as core,
        cluster_node(settings, "broker") as node,
        one_node_messaging(core) as messaging,
    ):
        broker = messaging.broker
        sock = bind_socket(settings.bind, settings.broker_ws_port)
        host = settings.advertised_host
        ws_url = f"ws://{host}:{sock.getsockname()[1]}{WS_PATH}"
        app = Starlette(routes=[WebSocketRoute(WS_PATH, WebSocketBridge(broker).serve), *node.routes()])
        node.metrics.register(broker.collector())
        node.collector.connections = lambda: _connections(broker)
        endpoints = Endpoints(
            mqtt_host=host, mqtt_port=broker.mqtt_port, ws_url=ws_url, http_url=http_url(sock)
        )
        await node.register(endpoints, connections=node.collector.connections, snowflake_id=settings.node_id)
        await serve_until_stopped(
            uvicorn_server(app, settings), sock, mqtt=f"{settings.bind}:{broker.mqtt_port}", ws=ws_url
        )
